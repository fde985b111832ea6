"""Random search: the baseline every other searcher must beat at equal evaluation budget.

Each candidate draws its compute density uniformly, then its bits, so candidates spread over the whole
speed range instead of piling up at a 2x MAC speedup as fair coin flips would.
"""

from __future__ import annotations

from schedules import Schedule

from .base import Searcher, SearcherSettings


class RandomSettings(SearcherSettings):
    min_density: float = 0.05     # lowest fraction of computed slots drawn
    max_density: float = 0.95
    max_tries: int = 1000         # draws per candidate before giving up (the space is exhausted)


class RandomSearcher(Searcher):
    name = "random"
    Settings = RandomSettings

    def _propose(self, n: int) -> list[Schedule]:
        s = self.settings
        out: list[Schedule] = []
        for _ in range(n):
            for _try in range(s.max_tries):
                density = s.min_density + (s.max_density - s.min_density) * self.rng.random()
                cand = self.space.decode(self.space.random_genome(self.rng, density))
                if self.fresh(cand, out):
                    out.append(self.tag(cand, density=round(density, 4)))
                    break
            else:
                self.finished = not self._pending and not out
                break
        return out
