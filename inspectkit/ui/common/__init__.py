"""What the tabs build on: the Inspect tab's session and the jobs it runs, result rendering, heat-map legends, the CSV
export, the report view, the Gradio API functions, the page handle and the sessions' model cache."""
