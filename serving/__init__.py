"""The KServe model server (``apd serve``), its explainer (``apd explain``), the payload sink and the web page.

KServe 0.21's REST endpoints answer with fastapi.responses.ORJSONResponse, which FastAPI deprecated in 0.131: the
answers are unchanged, and the warning is KServe's to act on and says nothing about a request. It is filtered here,
in the package every server process imports (``--workers N`` spawns workers that import it too), so that it never
reaches the log.
"""

import warnings

from fastapi.exceptions import FastAPIDeprecationWarning

warnings.filterwarnings("ignore", message="ORJSONResponse is deprecated", category=FastAPIDeprecationWarning)
