"""Files that workflow file steps write show up in the file manager, under Workflows."""

import zipfile
from io import BytesIO

import test_workflow_helpers
from test_workflow_helpers import create_workflow, definition, run_inline, step

from app.extensions import db
from app.files.models import File, Folder

member = test_workflow_helpers.member
other_member = test_workflow_helpers.other_member


def run_steps(app, client, member, *steps, data=None):
    workflow = create_workflow(client, member, definition(*steps))
    return run_inline(app, workflow["id"], member["org_id"], data, user_id=member["id"])


def workflow_files(app, org_id):
    """Return {folder path: {name: bytes}} of the organization's files stored by workflows."""
    with app.app_context():
        folders = {folder.id: folder for folder in db.session.scalars(db.select(Folder).where(Folder.org_id == org_id))}
        found = {}
        for stored in db.session.scalars(
            db.select(File).where(File.org_id == org_id, File.source == "workflow", File.deleted_at.is_(None))
        ):
            parts = []
            folder = folders.get(stored.folder_id)
            while folder is not None:
                parts.append(folder.name)
                folder = folders.get(folder.parent_id)
            from app.files.service import open_content

            with open_content(stored) as stream:
                found.setdefault("/".join(reversed(parts)), {})[stored.name] = stream.read()
        return found


def test_written_files_appear_in_files(app, client, member, auth):
    status = run_steps(
        app,
        client,
        member,
        step("write", "file", {"action": "write", "path": "reports/{{ trigger.name }}.txt", "content": "hello"}),
        step(
            "zip",
            "file",
            {"action": "zip", "sources": ["reports"], "destination": "out/all.zip"},
            depends_on=["write"],
        ),
        data={"name": "weekly"},
    )
    auth.signin(member["email"])
    with app.app_context():
        workflows_id = db.session.scalar(db.select(Folder.id).where(Folder.name == "Workflows"))
    listing = client.get(f"/files?folder={workflows_id}").get_data(as_text=True)

    files = workflow_files(app, member["org_id"])
    assert status == "succeeded"
    assert files["Workflows/reports"] == {"weekly.txt": b"hello"}
    with zipfile.ZipFile(BytesIO(files["Workflows/out"]["all.zip"])) as archive:
        assert archive.namelist() == ["reports/weekly.txt"]
    assert ">reports</a>" in listing
    assert ">out</a>" in listing


def test_rewritten_path_replaces_file(app, client, member, other_member):
    write = step("write", "file", {"action": "write", "path": "status.txt", "content": "{{ trigger.text }}"})

    first = run_steps(app, client, member, write, data={"text": "first"})
    second = run_steps(app, client, member, write, data={"text": "second"})

    assert first == "succeeded"
    assert second == "succeeded"
    assert workflow_files(app, member["org_id"]) == {"Workflows": {"status.txt": b"second"}}
    assert workflow_files(app, other_member["org_id"]) == {}
