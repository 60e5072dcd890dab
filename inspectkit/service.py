"""The serving layer in one import: what ``app.py`` and the tools use to run the Space.

Each concern lives in its own module; this one only gathers their public names, so ``from inspectkit import
service`` keeps working and a newcomer finds the map here:

==================  =============================================================================================
module              what it holds
==================  =============================================================================================
``limits``          upload, batch and wait limits, Gradio's poll intervals, the fair inference lock
``names``           safe file names and error messages for the page, CSV and JSON
``model_source``    which checkpoint runs (local, committed or from the Hub) and its lazy, background loading
``results``         one inspection's JSON result, and the locked inspection calls
``http_api``        FastAPI ``/api/inspect``, ``/api/health`` (guard, drift) and ``/api/drift``, the body-size limit,
                    the server's drift monitor, the Gradio mount, uvicorn
==================  =============================================================================================

Importing it is cheap on purpose: torch, the handler and huggingface_hub are imported only when the model is
actually loaded, so ``python app.py`` serves its page in about the time a bare Gradio app needs.
"""

from .http_api import (BodyLimitMiddleware, BodyTooLarge, DriftChange, DriftState, ErrorBody,  # noqa: F401
                       GuardState, Health, InspectResponse, RecentDrift, calm_queue, create_api, create_app,
                       guard_state, serve, server_address)
from .limits import (BODY_SLACK_BYTES, INFERENCE_LOCK, MAX_API_WAITING, MAX_BATCH, MAX_NAME_CHARS,  # noqa: F401
                     MAX_UPLOAD_BYTES, MAX_UPLOAD_MB, MODEL_WAIT_S, PROGRESS_POLL_S, QUEUE_POLL_S, FairLock)
from .model_source import (DEFAULT_CHECKPOINT, ENV_MODEL_FILE, ENV_MODEL_PATH, ENV_MODEL_REPO,  # noqa: F401
                           ENV_MODEL_REVISION, ENV_MODEL_SHA256, REPO, LazyHandler, ModelUnavailable,
                           default_handler_factory, fetch_graph, get_handler, model_state, resolve_checkpoint,
                           warm_up)
from .names import error_message, safe_name, safe_text, upload_name  # noqa: F401
from .results import (HEATMAP_MODES, check_heatmap_mode, display_names_of, encode_png, inspect_many,  # noqa: F401
                      inspect_one, label_for, result_json, review_band_for, round_or_none)
