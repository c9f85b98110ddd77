"""The S3-compatible storage, against moto's S3 server on 127.0.0.1."""

import io

import pytest

from app.files.storage import S3Storage, new_key

moto_server = pytest.importorskip("moto.server")


@pytest.fixture
def s3_endpoint(monkeypatch):
    # moto reads credentials like any S3 client; these are moto's placeholders, not real keys.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def storage(s3_endpoint):
    storage = S3Storage("floyo-files", prefix="files/", endpoint_url=s3_endpoint, region="us-east-1")
    storage.client.create_bucket(Bucket="floyo-files")
    return storage


def test_s3_save_open_delete(storage):
    key = new_key()

    storage.save(7, key, io.BytesIO("отчёт 😆".encode()))
    content = storage.open(7, key).read()
    storage.delete(7, key)

    assert content == "отчёт 😆".encode()
    listed = storage.client.list_objects_v2(Bucket="floyo-files").get("Contents", [])
    assert listed == []


def test_s3_keys_are_generated_only(storage):
    with pytest.raises(ValueError):
        storage.save(7, "../../etc/passwd", io.BytesIO(b"x"))


def test_upload_through_api_to_s3(app, client, make_user, make_api_key, storage):
    app.extensions["floyo_storage"] = storage
    user = make_user()
    key = make_api_key(user)

    response = client.post(
        "/api/v1/files/upload",
        data={"file": (io.BytesIO(b"%PDF-1.7 body"), "résumé.pdf")},
        headers={"Authorization": f"Bearer {key}"},
        content_type="multipart/form-data",
    )
    item = response.get_json()["data"][0]
    download = client.get(item["content_url"], headers={"Authorization": f"Bearer {key}"})

    assert response.status_code == 201
    assert download.data == b"%PDF-1.7 body"
    objects = storage.client.list_objects_v2(Bucket="floyo-files")["Contents"]
    assert [entry["Key"].split("/")[:2] for entry in objects] == [["files", str(user["org_id"])]]
