"""One module per dashboard page; each exposes `render(ctx)`. (Not named `pages/`: Streamlit would
turn a `pages/` folder next to the entry script into its own multipage navigation.)"""
