"""Drives the official Aitronos client (PyPI aitronos-sdk 5.0.0) against a running Kiln
through the 22 endpoints of the vector-stores and organization-files family, checking the
values it gets back. Run by tests/sdk.rs with KILN_URL and KILN_API_KEY; prints one JSON
object for the Rust side (what it should find purged), or exits non-zero naming the failure.
"""

import base64
import json
import os
import sys
import time

import httpx
from aitronos import Aitronos, Base64FileUpload
from aitronos.core.api_error import ApiError

URL = os.environ["KILN_URL"]
KEY = os.environ["KILN_API_KEY"]
client = Aitronos(base_url=URL, api_key=KEY, timeout=120)
http = httpx.Client(base_url=URL, headers={"x-api-key": KEY}, timeout=120)
checks = 0


def check(condition, message):
    global checks
    if not condition:
        print(f"FAILED: {message}", file=sys.stderr)
        sys.exit(1)
    checks += 1


def api_error(call, **kwargs):
    """The ApiError a call raises (never re-sent: max_retries 0)."""
    try:
        call(**kwargs, request_options={"max_retries": 0})
    except ApiError as err:
        return err
    check(False, f"{call.__name__} should have failed")


FACTS = (
    "Zebrafish regenerate their heart muscle after injury. The regeneration depends on "
    "cardiomyocyte proliferation near the wound, which retinoic acid signalling from the "
    "epicardium sustains for several weeks.\n"
).encode()
NOTES = b"# Notes\n\nThe basalt columns of the causeway cooled slowly from lava.\n"
BIG = json.dumps({"title": "Lighthouse keeper logbook", "entries": ["fog", "gale", "calm"]}).encode()
B64_TEXT = b"Copper tarnishes to a green patina of basic copper carbonate over decades.\n"

# Organizations: the key's own, parsed by the client's model.
orgs = client.organizations.list_organizations()
check(orgs.total == 1 and len(orgs.organizations) == 1, f"one organization: {orgs}")
org = orgs.organizations[0]
check(org.is_active is True and org.type == "organization", f"organization fields: {org}")
ORG = org.id

# Vector stores: create (no slice), list with search/sort/order/skip/take, get, update.
alpha = client.vector_stores.create_vector_store(ORG, name="Alpha", description="first").data
beta = client.vector_stores.create_vector_store(ORG, name="Beta").data
check(alpha.id.startswith("vs_") and alpha.name == "Alpha" and alpha.description == "first",
      f"created store: {alpha}")
check(alpha.file_count == 0 and alpha.data_size == 0 and alpha.is_active, f"empty store: {alpha}")
check(alpha.access_mode == "organization" and alpha.organization_id == ORG, f"store: {alpha}")
names = [s.name for s in client.vector_stores.list_vector_stores(ORG, sort="name", order="asc").data]
check(names == ["Alpha", "Beta"], f"sorted by name: {names}")
names = [s.name for s in client.vector_stores.list_vector_stores(ORG, sort="name", order="desc").data]
check(names == ["Beta", "Alpha"], f"sorted by name, descending: {names}")
names = [s.name for s in client.vector_stores.list_vector_stores(ORG, search="alp").data]
check(names == ["Alpha"], f"search: {names}")
names = [s.name for s in client.vector_stores.list_vector_stores(ORG, sort="name", order="asc", skip=1, take=1).data]
check(names == ["Beta"], f"skip/take: {names}")
names = [s.name for s in client.vector_stores.list_vector_stores(ORG, access_mode="private").data]
check(names == [], f"access_mode filter: {names}")
check(client.vector_stores.get_vector_store(ORG, beta.id).data.name == "Beta", "get store")
beta = client.vector_stores.update_vector_store(ORG, beta.id, description="second", name="Beta 2").data
check(beta.name == "Beta 2" and beta.description == "second", f"updated: {beta}")

# Organization files: multipart (field `files`, repeated).
up = client.files.upload_file(ORG, files=[("facts.txt", FACTS, "text/plain"), ("notes.md", NOTES, "text/markdown")])
check(up.success and up.total_uploaded == 2 and not up.errors, f"multipart upload: {up}")
facts, notes = up.files
check(facts.id.startswith("file_") and facts.original_filename == "facts.txt", f"{facts}")
check(facts.file_size == len(FACTS) and notes.file_size == len(NOTES), f"sizes: {up.files}")
check(facts.mime_type == "text/plain" and facts.organization_id == ORG and facts.storage_path, f"{facts}")

# Upload URL + PUT + register.
started = client.files.generate_upload_url(
    ORG, request={"files": [{"file_name": "logbook.json", "file_size": len(BIG), "mime_type": "application/json"}]})
check(started["success"] and len(started["uploads"]) == 1, f"upload-url: {started}")
upload = started["uploads"][0]
put = httpx.put(upload["upload_url"], content=BIG, timeout=60)
check(put.status_code == 200, f"PUT to the upload URL: {put.status_code} {put.text}")
registered = client.files.register_file(ORG, request={"files": [{"upload_id": upload["upload_id"]}]})
check(registered["total_uploaded"] == 1, f"register: {registered}")
logbook = registered["files"][0]
check(logbook["id"] == upload["upload_id"] and logbook["file_size"] == len(BIG), f"{logbook}")

# List with page/limit, get, content and download.
page1 = client.files.list_files(ORG, page=1, limit=2)
page2 = client.files.list_files(ORG, page=2, limit=2)
check(page1.total == 3 and len(page1.files) == 2 and page1.has_more, f"page 1: {page1}")
check(len(page2.files) == 1 and not page2.has_more and page2.page == 2, f"page 2: {page2}")
listed = {f.id for f in page1.files + page2.files}
check(listed == {facts.id, notes.id, logbook["id"]}, f"listed: {listed}")
check(client.files.get_file(ORG, notes.id).original_filename == "notes.md", "get org file")
content = client.files.get_file_content(ORG, logbook["id"])
check(content.filename == "logbook.json" and content.file_size == len(BIG), f"content: {content}")
query = dict(httpx.URL(content.download_url).params)
downloaded = client.files.download_file_content(ORG, logbook["id"], token=query["token"], expires=int(query["expires"]))
check(downloaded == json.loads(BIG), f"downloaded: {downloaded}")
raw = httpx.get(content.download_url)  # no API key: the signature is the credential
check(raw.status_code == 200 and raw.content == BIG, f"signed download: {raw.status_code}")
bad = httpx.get(content.download_url.replace("token=", "token=00"))
check(bad.status_code == 401, f"a forged token: {bad.status_code}")

# Base64 upload into Alpha: per-file results and errors.
b64 = client.vector_store_files.upload_base64files_to_vector_store(ORG, alpha.id, files=[
    Base64FileUpload(filename="patina.txt", content=base64.b64encode(B64_TEXT).decode(), mime_type="text/plain"),
    Base64FileUpload(filename="blank.txt", content=base64.b64encode(b" \n\t \n").decode(), mime_type="text/plain"),
    Base64FileUpload(filename="tool.exe", content=base64.b64encode(b"MZ\x90\x00\x03\x00\x00\x00\x04").decode(),
                     mime_type="application/octet-stream"),
])
check(not b64.success and b64.total_uploaded == 2 and b64.total_failed == 1, f"base64: {b64}")
check(b64.errors[0]["filename"] == "tool.exe" and b64.errors[0]["error_code"] == "UNSUPPORTED_FILE_TYPE", f"{b64.errors}")
patina, blank = b64.files
check(patina.vector_store_id == alpha.id and patina.file_id.startswith("file_") and patina.id.startswith("vsf_"), f"{patina}")
check(patina.file_size == len(B64_TEXT) and patina.chunk_count == 0, f"{patina}")

# Add one organization file to both stores; a second add answers the same link.
in_alpha = client.vector_store_files.add_file_to_vector_store(ORG, alpha.id, file_id=facts.id).data
in_beta = client.vector_store_files.add_file_to_vector_store(ORG, beta.id, file_id=facts.id).data
again = client.vector_store_files.add_file_to_vector_store(ORG, alpha.id, file_id=facts.id).data
check(in_alpha.id.startswith("vsf_") and in_alpha.file_id == facts.id, f"link: {in_alpha}")
check(in_alpha.id != in_beta.id and again.id == in_alpha.id, f"links: {in_alpha.id} {in_beta.id} {again.id}")
check(in_alpha.processing_status in ("pending", "processing") and in_alpha.file_name == "facts.txt", f"{in_alpha}")


def settle(store_id, file_id):
    deadline = time.time() + 300
    while time.time() < deadline:
        status = client.vector_store_files.get_processing_status(ORG, store_id, file_id).data
        if status.status in ("completed", "failed"):
            return status
        time.sleep(0.2)
    check(False, f"{file_id} in {store_id} did not settle")


done_alpha = settle(alpha.id, facts.id)
done_beta = settle(beta.id, facts.id)
check(done_alpha.status == "completed" and done_alpha.chunk_count and done_alpha.chunk_count > 0, f"{done_alpha}")
check(done_alpha.vector_store_file_id == in_alpha.id and done_alpha.file_id == facts.id, f"{done_alpha}")
check(done_alpha.vector_store_id == alpha.id and done_alpha.processing_completed_at is not None, f"{done_alpha}")
check(done_beta.status == "completed" and done_beta.vector_store_file_id == in_beta.id, f"{done_beta}")
check(done_alpha.embedding_model, f"model named: {done_alpha}")
check(settle(alpha.id, patina.file_id).status == "completed", "base64 file completed")
failed = settle(alpha.id, blank.file_id)
check(failed.status == "failed" and failed.error_message, f"blank file fails with a reason: {failed}")


def search(store_id, query):
    response = http.post(f"/v1/organizations/{ORG}/stores/{store_id}/search",
                         json={"query": query, "mode": "hybrid", "top_k": 5})
    check(response.status_code == 200, f"search: {response.status_code} {response.text}")
    return [hit["file_id"] for hit in response.json()["results"]]


QUERY = "zebrafish heart regeneration cardiomyocyte"
check(search(alpha.id, QUERY)[:1] == [in_alpha.id], "found in Alpha")
check(search(beta.id, QUERY)[:1] == [in_beta.id], "found in Beta")

# Lists with status filters and pages.
both = client.vector_store_files.list_files_in_vector_store(ORG, alpha.id, status="completed,failed", page=1, page_size=2).data
check(both.total == 3 and both.total_pages == 2 and len(both.files) == 2 and both.page_size == 2, f"{both}")
rest = client.vector_store_files.list_files_in_vector_store(ORG, alpha.id, status="completed,failed", page=2, page_size=2).data
check(len(rest.files) == 1, f"page 2: {rest}")
check({f.file_id for f in both.files + rest.files} == {facts.id, patina.file_id, blank.file_id}, "all three listed")
completed = client.vector_store_files.list_files_in_vector_store(ORG, alpha.id, status="completed").data
check(completed.total == 2 and all(f.processing_status == "completed" for f in completed.files), f"{completed}")
check(client.vector_store_files.list_files_in_vector_store(ORG, alpha.id, status="failed").data.total == 1, "one failed")

# Logs, details.
logs = client.vector_store_files.get_file_processing_logs(ORG, alpha.id, facts.id).data
events = [item["event"] for item in logs["items"]]
check("uploaded" in events and "queued" in events and logs["total"] == len(events), f"logs: {events}")
details = client.vector_store_files.get_file_details(ORG, beta.id, facts.id).data
check(details.processing_status == "completed" and details.chunk_count == done_beta.chunk_count, f"{details}")
check(client.vector_store_files.get_file_details(ORG, beta.id, in_beta.id).data.id == in_beta.id, "by link ID")

# Retry: failed -> 200 pending; completed -> 409 (after the client's own re-sends).
retried = client.vector_store_files.retry_failed_processing(ORG, alpha.id, blank.file_id).data
check(retried.status == "pending" and retried.error_message is None, f"retry: {retried}")
t0 = time.time()
try:
    client.vector_store_files.retry_failed_processing(ORG, alpha.id, facts.id, reset_error=True)
    check(False, "a completed file's retry must fail")
except ApiError as err:
    check(err.status_code == 409 and err.body["error"]["code"] == "FILE_ALREADY_PROCESSED", f"{err.body}")
conflict_seconds = time.time() - t0

# Usage, to the byte.
usage = client.vector_stores.get_vector_store_usage(ORG).data
rows = {row.vector_store_id: row for row in usage.vector_stores}
check(rows[alpha.id].data_size_bytes == len(FACTS) + len(B64_TEXT) + len(b" \n\t \n"), f"Alpha: {rows[alpha.id]}")
check(rows[beta.id].data_size_bytes == len(FACTS) and rows[beta.id].file_count == 1, f"Beta: {rows[beta.id]}")
check(usage.total_size_bytes == sum(r.data_size_bytes for r in usage.vector_stores), f"{usage}")
check(usage.vector_store_count == 2 and usage.total_files == 4, f"{usage}")
check(abs(sum(r.usage_percentage for r in usage.vector_stores) - 100.0) < 0.05, f"{usage}")
check(client.vector_stores.get_vector_store(ORG, alpha.id).data.data_size == rows[alpha.id].data_size_bytes, "store data_size")

# Remove from Alpha: still an org file, still in Beta and searchable there.
client.vector_store_files.remove_file_from_vector_store(ORG, alpha.id, facts.id)
check(api_error(client.vector_store_files.get_file_details, organization_id=ORG, vector_store_id=alpha.id,
                file_id=facts.id).status_code == 404, "gone from Alpha")
check(client.files.get_file(ORG, facts.id).id == facts.id, "still an organization file")
check(in_alpha.id not in search(alpha.id, QUERY), "not found in Alpha")
check(search(beta.id, QUERY)[:1] == [in_beta.id], "still found in Beta")

# Delete the organization file: gone everywhere.
client.files.delete_file(ORG, facts.id)
check(api_error(client.files.get_file, organization_id=ORG, file_id=facts.id).status_code == 404, "org file gone")
check(api_error(client.vector_store_files.get_processing_status, organization_id=ORG, vector_store_id=beta.id,
                file_id=facts.id).status_code == 404, "gone from Beta")
check(in_beta.id not in search(beta.id, QUERY), "not found in Beta")
check(client.vector_stores.get_vector_store(ORG, beta.id).data.file_count == 0, "Beta empty")

# Delete a store: gone; its organization files stay.
client.vector_stores.delete_vector_store(ORG, beta.id)
check(api_error(client.vector_stores.get_vector_store, organization_id=ORG, vector_store_id=beta.id).status_code == 404,
      "store deleted")
check(client.files.get_file(ORG, notes.id).id == notes.id, "org files outlive a store")

print(json.dumps({
    "checks": checks,
    "deleted_org_file": facts.id,
    "deleted_storage_path": facts.storage_path,
    "conflict_seconds": round(conflict_seconds, 2),
}))
