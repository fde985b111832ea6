"""Who found a schedule: the provenance vocabulary every stored result, export and page reads.

A schedule's `provenance` is a JSON mapping (not part of its hash). Searchers and the study set:

    searcher          the study's searcher that proposed it (ecad, dp, bayes, random, heuristics)
    heuristic         a hand-made schedule's family (fora, tgate, ...), with
    heuristic_params  its parameters ({"interval": 2})
    generation        ECAD's generation; `round` the DP's refinement round; `trial` Bayes' trial
    parents           ECAD offspring: the parents' schedule hashes; `operators` what made it
                      (crossover, mutation, step-mutation)
    seed_from         a searcher seed: "study NAME" or "file PATH" it came from
    imported_from     a result copied from another study (no evaluation spent here)

`origin` sorts every result into one of `ORIGINS` and `describe` writes it as one line, so the CLI's
front, the dashboard's hover, table and Schedule page, and exported files all say the same thing:
"fora(interval=2)", "ecad generation 3: crossover, mutation of 3fa9c0d1 x 77ab12cd".
"""

from __future__ import annotations

from typing import Any, Mapping

HEURISTIC, SEED, SEARCH, IMPORTED, UNKNOWN = "heuristic", "seed", "search", "imported", "unknown"
#: Origins in display order: a hand-made schedule (wherever it came from), a seed given to the
#: searcher, a result imported from another study, one the search itself found.
ORIGINS = (HEURISTIC, SEED, IMPORTED, SEARCH)
ORIGIN_LABELS = {HEURISTIC: "heuristic", SEED: "seed", IMPORTED: "imported", SEARCH: "found by the search",
                 UNKNOWN: "unknown"}


def origin(provenance: Mapping[str, Any] | None) -> str:
    """One of `ORIGINS` (`unknown` for a result that carries none, e.g. written by hand)."""
    prov = provenance or {}
    if prov.get("heuristic"):
        return HEURISTIC
    if prov.get("imported_from"):
        return IMPORTED
    if prov.get("seed_from"):
        return SEED
    if prov.get("searcher"):
        return SEARCH
    return UNKNOWN


def heuristic_name(provenance: Mapping[str, Any] | None) -> str | None:
    """'fora(interval=2)' for a heuristic, else None."""
    prov = provenance or {}
    name = prov.get("heuristic")
    if not name:
        return None
    params = prov.get("heuristic_params") or {}
    return f"{name}({', '.join(f'{k}={_value(v)}' for k, v in params.items())})"


def describe(provenance: Mapping[str, Any] | None) -> str:
    """The provenance as one line (the `from` column, hover text, captions)."""
    prov = provenance or {}
    parts: list[str] = []
    heuristic = heuristic_name(prov)
    searcher = prov.get("searcher")
    found = _found_by(prov) if searcher else None
    if heuristic:
        parts.append(heuristic + (f" (as {found})" if found and found != searcher else ""))
    elif found:
        parts.append(found)
    if prov.get("seed_from"):
        parts.append(f"seed from {prov['seed_from']}")
    if prov.get("imported_from"):
        parts.append(f"imported from study {prov['imported_from']}")
    return "; ".join(parts) if parts else "unknown"


def _found_by(prov: Mapping[str, Any]) -> str:
    """'ecad generation 3: crossover, mutation of 3fa9c0d1 x 77ab12cd', 'dp round 1, step+forecast'."""
    text = str(prov["searcher"])
    for key, word in (("generation", "generation"), ("round", "round"), ("trial", "trial")):
        if prov.get(key) is not None:
            text += f" {word} {prov[key]}"
            break
    if prov.get("granularity"):
        text += f", {prov['granularity']}"
    parents = [str(p)[:8] for p in prov.get("parents") or []]
    if parents:
        ops = ", ".join(prov.get("operators") or []) or "bred"
        text += f": {ops} of {' x '.join(parents)}"
    return text


def _value(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)
