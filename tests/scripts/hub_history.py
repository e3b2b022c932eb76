"""The loopback Hub itself, with the real client: commits with history, old revisions, a stale parent refused, a
deleted file (tests/test_hub_push.py)."""

from pathlib import Path

from hub_common import RESULT, finish
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import HfHubHTTPError, RemoteEntryNotFoundError

api = HfApi()
api.create_repo("user/h")
first = api.upload_file(path_or_fileobj=b"v1", path_in_repo="a/b.txt", repo_id="user/h", commit_message="one")
second = api.upload_file(path_or_fileobj=b"v2", path_in_repo="a/b.txt", repo_id="user/h", commit_message="two")
RESULT["old"] = Path(hf_hub_download("user/h", "a/b.txt", revision=first.oid)).read_text()
RESULT["new"] = Path(hf_hub_download("user/h", "a/b.txt")).read_text()
RESULT["titles"] = [c.title for c in api.list_repo_commits("user/h")]
try:  # a commit based on a stale parent is refused
    api.upload_file(path_or_fileobj=b"v3", path_in_repo="c.txt", repo_id="user/h", parent_commit=first.oid)
except HfHubHTTPError as err:
    RESULT["stale_parent"] = err.response.status_code
api.delete_file("a/b.txt", repo_id="user/h")
try:
    hf_hub_download("user/h", "a/b.txt", force_download=True)
except RemoteEntryNotFoundError:
    RESULT["deleted"] = True
RESULT["tree"] = [f.path for f in api.list_repo_tree("user/h", recursive=True, revision=second.oid)]
finish()
