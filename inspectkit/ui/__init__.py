"""The Gradio app: :func:`inspectkit.ui.app.build_demo` composes one module per tab."""
