"""The loopback Hub refuses a request without a token: the HTTP status (tests/test_hub_push.py)."""

from hub_common import RESULT, finish
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError

try:
    HfApi(token=False).create_repo("user/anon")
except HfHubHTTPError as err:
    RESULT["status"] = err.response.status_code
finish()
