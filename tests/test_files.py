"""The file manager: storing names in any script, containment, serving, limits, trash, org scope."""

import io
import os
from pathlib import Path
from urllib.parse import quote

import pytest

from app.extensions import db
from app.files.models import File, Folder

SVG_WITH_SCRIPT = b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
HTML_PAGE = b"<!doctype html><html><body><script>alert(document.cookie)</script></body></html>"
PDF = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 40


def bearer(key):
    return {"Authorization": f"Bearer {key}"}


def upload(client, key, files, folder_id=None):
    """POST (name, bytes, declared type) tuples to the API in one request."""
    data = {"file": [(io.BytesIO(content), name, declared) for name, content, declared in files]}
    if folder_id:
        data["folder_id"] = str(folder_id)
    return client.post("/api/v1/files/upload", data=data, headers=bearer(key), content_type="multipart/form-data")


@pytest.fixture(autouse=True)
def own_storage(app, tmp_path):
    """Give each test an empty storage folder; in the full mode the instance folder is shared."""
    app.config["FILE_STORAGE_PATH"] = str(tmp_path / "files")
    app.extensions.pop("floyo_storage", None)


@pytest.fixture
def member(make_user):
    return make_user()


@pytest.fixture
def key(member, make_api_key):
    return make_api_key(member)


def storage_files(app):
    root = Path(app.config["FILE_STORAGE_PATH"])
    return sorted(path for path in root.rglob("*") if path.is_file()) if root.exists() else []


def test_names_in_any_script_round_trip(client, key):
    files = [
        ("отчёт.pdf", PDF + b"first", "application/pdf"),
        ("отчет.pdf", PDF + b"second", "application/pdf"),
        ("résumé.pdf", PDF + b"third", "application/pdf"),
        ("😆", b"just a smile", "application/octet-stream"),
    ]

    response = upload(client, key, files)

    assert response.status_code == 201
    stored = response.get_json()["data"]
    assert [item["name"] for item in stored] == [name for name, _, _ in files]
    assert len({item["id"] for item in stored}) == 4
    for item, (name, content, _) in zip(stored, files, strict=True):
        download = client.get(f"/api/v1/files/{item['id']}/content", headers=bearer(key))
        assert download.status_code == 200
        assert download.data == content
        assert f"filename*=UTF-8''{quote(name)}" in download.headers["Content-Disposition"]


def test_same_name_twice_keeps_both(client, key):
    first = upload(client, key, [("notes.txt", b"one", "text/plain")]).get_json()["data"][0]
    second = upload(client, key, [("notes.txt", b"two", "text/plain")]).get_json()["data"][0]

    assert first["id"] != second["id"]
    assert client.get(first["content_url"], headers=bearer(key)).data == b"one"
    assert client.get(second["content_url"], headers=bearer(key)).data == b"two"


def test_path_in_name_stays_inside_storage(client, key, member, app):
    marker = os.urandom(16).hex().encode()

    response = upload(client, key, [("../../../tmp/x.txt", marker, "text/plain")])

    item = response.get_json()["data"][0]
    assert response.status_code == 201
    assert item["name"] == "x.txt"
    root = Path(app.config["FILE_STORAGE_PATH"]).resolve()
    stored = storage_files(app)
    assert len(stored) == 1
    assert stored[0].resolve().is_relative_to(root / str(member["org_id"]))
    assert stored[0].read_bytes() == marker
    if Path("/tmp/x.txt").exists():
        assert Path("/tmp/x.txt").read_bytes() != marker


@pytest.mark.parametrize("name", ["..", "../", "a/b/", "\x00\x01"])
def test_name_without_file_part_rejected(client, key, app, name):
    response = upload(client, key, [(name, b"data", "text/plain")])

    assert response.status_code == 422
    assert storage_files(app) == []


@pytest.mark.parametrize(
    ("name", "content", "declared"),
    [
        ("drawing.svg", SVG_WITH_SCRIPT, "image/svg+xml"),
        ("page.html", HTML_PAGE, "text/html"),
        ("innocent.png", HTML_PAGE, "image/png"),
    ],
)
def test_active_content_served_as_attachment(client, key, member, auth, name, content, declared):
    item = upload(client, key, [(name, content, declared)]).get_json()["data"][0]
    auth.signin(member["email"])

    for url in (item["content_url"], f"/files/{item['id']}/download", f"/files/{item['id']}/preview"):
        response = client.get(url, headers=bearer(key) if url.startswith("/api") else {})
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "application/octet-stream"
        assert response.headers["Content-Disposition"].startswith("attachment")
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.data == content


def test_content_type_detected_from_bytes(client, key):
    items = upload(
        client,
        key,
        [
            ("scan.txt", PDF, "text/plain"),
            ("photo", PNG, "text/html"),
            ("readme.pdf", b"plain words", "application/pdf"),
        ],
    ).get_json()["data"]

    assert [item["content_type"] for item in items] == ["application/pdf", "image/png", "text/plain"]


def test_images_and_pdfs_preview_inline(client, key, member, auth):
    item = upload(client, key, [("chart.png", PNG, "image/png")]).get_json()["data"][0]
    auth.signin(member["email"])

    preview = client.get(f"/files/{item['id']}/preview")
    download = client.get(f"/files/{item['id']}/download")

    assert preview.headers["Content-Type"] == "image/png"
    assert preview.headers["Content-Disposition"].startswith("inline")
    assert preview.headers["X-Content-Type-Options"] == "nosniff"
    assert download.headers["Content-Disposition"].startswith("attachment")


def test_upload_over_limit_api(client, key, app):
    app.config["FILE_MAX_UPLOAD_BYTES"] = 1024

    response = upload(client, key, [("big.bin", b"x" * 200_000, "application/octet-stream")])

    body = response.get_json()
    assert response.status_code == 413
    assert body["error"]["code"] == "payload_too_large"
    assert "larger than the limit of 1.0 KB per file" in body["error"]["message"]
    assert "Nothing was stored" in body["error"]["message"]
    assert storage_files(app) == []
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count()).select_from(File)) == 0


def test_upload_over_limit_page(client, member, auth, app):
    app.config["FILE_MAX_UPLOAD_BYTES"] = 100 * 1024
    auth.signin(member["email"])

    response = client.post(
        "/files/upload",
        data={"file": (io.BytesIO(b"x" * 300_000), "big.bin")},
        content_type="multipart/form-data",
    )

    assert response.status_code == 413
    assert "larger than the limit of 100.0 KB per file" in response.get_data(as_text=True)
    assert storage_files(app) == []


def test_page_upload_several_files(client, member, auth, app):
    auth.signin(member["email"])

    response = client.post(
        "/files/upload",
        data={"file": [(io.BytesIO(b"a"), "a.txt"), (io.BytesIO(b"bb"), "b.txt")]},
        content_type="multipart/form-data",
    )
    listing = client.get("/files").get_data(as_text=True)

    assert response.status_code == 302
    assert "a.txt" in listing
    assert "b.txt" in listing
    assert len(storage_files(app)) == 2


def test_other_org_gets_404(client, key, make_user, make_api_key, auth):
    item = upload(client, key, [("secret.txt", b"mine", "text/plain")]).get_json()["data"][0]
    other = make_user()
    other_key = make_api_key(other)

    api_responses = [
        client.get(f"/api/v1/files/{item['id']}", headers=bearer(other_key)),
        client.get(f"/api/v1/files/{item['id']}/content", headers=bearer(other_key)),
        client.patch(f"/api/v1/files/{item['id']}", json={"name": "stolen.txt"}, headers=bearer(other_key)),
        client.delete(f"/api/v1/files/{item['id']}", headers=bearer(other_key)),
    ]
    auth.signin(other["email"])
    page_responses = [
        client.get(f"/files/{item['id']}"),
        client.get(f"/files/{item['id']}/download"),
        client.post(f"/files/{item['id']}/rename", data={"name": "stolen.txt"}),
        client.post(f"/files/{item['id']}/delete"),
    ]
    listed = client.get("/api/v1/files").get_json()

    assert [response.status_code for response in api_responses] == [404, 404, 404, 404]
    assert [response.status_code for response in page_responses] == [404, 404, 404, 404]
    assert listed["data"] == []
    assert client.get(item["content_url"], headers=bearer(key)).data == b"mine"
    assert client.get(f"/api/v1/files/{item['id']}", headers=bearer(key)).get_json()["data"]["name"] == "secret.txt"


def test_rename_move_trash_restore_api(client, key, member, app):
    item = upload(client, key, [("draft.txt", b"text", "text/plain")]).get_json()["data"][0]
    with app.app_context():
        folder = Folder(org_id=member["org_id"], name="Reports")
        db.session.add(folder)
        db.session.commit()
        folder_id = folder.id

    renamed = client.patch(
        f"/api/v1/files/{item['id']}", json={"name": "final.txt", "folder_id": folder_id}, headers=bearer(key)
    )
    trashed = client.delete(f"/api/v1/files/{item['id']}", headers=bearer(key))
    listed_after_trash = client.get("/api/v1/files", headers=bearer(key)).get_json()["data"]
    in_trash = client.get("/api/v1/files?trashed=true", headers=bearer(key)).get_json()["data"]
    restored = client.post(f"/api/v1/files/{item['id']}/restore", headers=bearer(key))

    assert renamed.status_code == 200
    assert renamed.get_json()["data"]["name"] == "final.txt"
    assert renamed.get_json()["data"]["folder_id"] == folder_id
    assert trashed.status_code == 204
    assert listed_after_trash == []
    assert [entry["id"] for entry in in_trash] == [item["id"]]
    assert restored.status_code == 200
    assert restored.get_json()["data"]["deleted_at"] is None


def test_patch_rejects_bad_body(client, key):
    item = upload(client, key, [("a.txt", b"a", "text/plain")]).get_json()["data"][0]

    unknown_field = client.patch(f"/api/v1/files/{item['id']}", json={"size": 3}, headers=bearer(key))
    empty_name = client.patch(f"/api/v1/files/{item['id']}", json={"name": "  "}, headers=bearer(key))
    missing_folder = client.patch(f"/api/v1/files/{item['id']}", json={"folder_id": 99999}, headers=bearer(key))

    assert unknown_field.status_code == 422
    assert empty_name.status_code == 422
    assert missing_folder.status_code == 404


def test_empty_trash_deletes_bytes(client, key, member, auth, app):
    item = upload(client, key, [("old.txt", b"old", "text/plain")]).get_json()["data"][0]
    client.delete(f"/api/v1/files/{item['id']}", headers=bearer(key))
    auth.signin(member["email"])

    response = client.post("/files/trash/empty")

    assert response.status_code == 302
    assert storage_files(app) == []
    assert client.get(f"/api/v1/files/{item['id']}", headers=bearer(key)).status_code == 404


def test_page_rename_move_delete_restore(client, key, member, auth, app):
    item = upload(client, key, [("plan.txt", b"plan", "text/plain")]).get_json()["data"][0]
    auth.signin(member["email"])
    client.post("/folders", data={"name": "Архив"})
    with app.app_context():
        folder_id = db.session.scalar(db.select(Folder.id).where(Folder.name == "Архив"))

    client.post(f"/files/{item['id']}/rename", data={"name": "план.txt"})
    client.post(f"/files/{item['id']}/move", data={"folder_id": str(folder_id)})
    in_folder = client.get(f"/files?folder={folder_id}").get_data(as_text=True)
    client.post(f"/files/{item['id']}/delete")
    trash = client.get("/files/trash").get_data(as_text=True)
    client.post(f"/files/{item['id']}/restore")

    assert "план.txt" in in_folder
    assert "план.txt" in trash
    with app.app_context():
        stored = db.session.get(File, item["id"])
        assert stored.name == "план.txt"
        assert stored.folder_id == folder_id
        assert stored.deleted_at is None


def test_list_search_sort_and_pages(client, key, member, auth):
    upload(client, key, [(f"file-{index:02d}.txt", b"x" * index, "text/plain") for index in range(1, 6)])
    upload(client, key, [("Отчёт за март.txt", b"report", "text/plain")])
    auth.signin(member["email"])

    by_size = client.get("/files?sort=size&order=desc").get_data(as_text=True)
    searched = client.get("/files?q=март", headers={"HX-Request": "true"}).get_data(as_text=True)
    first = client.get("/api/v1/files?limit=4", headers=bearer(key)).get_json()
    second = client.get(f"/api/v1/files?limit=4&cursor={first['next_cursor']}", headers=bearer(key)).get_json()

    assert by_size.index("Отчёт за март.txt") < by_size.index("file-05.txt") < by_size.index("file-01.txt")
    assert "Отчёт за март.txt" in searched
    assert "file-01.txt" not in searched
    assert len(first["data"]) == 4
    assert second["next_cursor"] is None
    assert [item["name"] for item in first["data"] + second["data"]][-1] == "Отчёт за март.txt"
    assert first["usage_bytes"] == 15 + len(b"report")


def test_openapi_lists_file_routes(client):
    paths = client.get("/api/v1/openapi.json").get_json()["paths"]

    assert "post" in paths["/api/v1/files/upload"]
    assert "get" in paths["/api/v1/files"]
    assert {"get", "patch", "delete"} <= set(paths["/api/v1/files/{file_id}"])
    assert "get" in paths["/api/v1/files/{file_id}/content"]
    assert "get" in paths["/api/v1/analytics/export"]


def test_page_rename_invalid_name_flashes(client, key, member, auth, app):
    item = upload(client, key, [("plan.txt", b"plan", "text/plain")]).get_json()["data"][0]
    auth.signin(member["email"])

    response = client.post(f"/files/{item['id']}/rename", data={"name": "../"})
    page = client.get(response.headers["Location"]).get_data(as_text=True)

    assert response.status_code == 302
    assert response.headers["Location"] == f"/files/{item['id']}"
    assert "is empty once folders are removed" in page
    assert "flash-error" in page
    with app.app_context():
        assert db.session.get(File, item["id"]).name == "plan.txt"


def test_page_folder_errors_flash(client, member, auth, app):
    auth.signin(member["email"])
    client.post("/folders", data={"name": "Reports"})
    with app.app_context():
        folder_id = db.session.scalar(db.select(Folder.id).where(Folder.name == "Reports"))
    client.post("/folders", data={"name": "2025", "parent_id": str(folder_id)})

    taken = client.post("/folders", data={"name": "Reports"})
    taken_page = client.get(taken.headers["Location"]).get_data(as_text=True)
    not_empty = client.post(f"/folders/{folder_id}/delete")
    not_empty_page = client.get(not_empty.headers["Location"]).get_data(as_text=True)

    assert taken.status_code == 302
    assert "A folder named &#39;Reports&#39; already exists here" in taken_page
    assert not_empty.status_code == 302
    assert "is not empty; move or delete what is in it first" in not_empty_page
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count()).select_from(Folder).where(Folder.name == "Reports")) == 1
