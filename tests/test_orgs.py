"""Organizations: create, switch, rename, delete; invitations; members and roles; the JSON API."""

import hashlib
import io
import re
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from app.admin.models import AuditEntry
from app.auth.models import ApiKey
from app.extensions import db
from app.files.models import File
from app.mail import outbox
from app.orgs.models import Invitation, Membership, Organization
from app.timeutil import utcnow

LINK = re.compile(r"http://localhost(/invitations/accept\?token=[A-Za-z0-9_-]+)")


@pytest.fixture(autouse=True)
def own_storage(app, tmp_path):
    app.config["FILE_STORAGE_PATH"] = str(tmp_path / "files")
    app.extensions.pop("floyo_storage", None)


def bearer(key):
    return {"Authorization": f"Bearer {key}"}


def create_org(app, client, name="Acme"):
    """Create an organization through the page as the signed-in user; return its id."""
    response = client.post("/orgs/new", data={"name": name})
    assert response.status_code == 302, response.data
    with app.app_context():
        return db.session.scalar(db.select(Organization.id).where(Organization.name == name.strip()))


def add_member(app, org_id, user, role):
    with app.app_context():
        db.session.add(Membership(org_id=org_id, user_id=user["id"], role=role))
        db.session.commit()


def use_org(client, org_id):
    with client.session_transaction() as session:
        session["org_id"] = org_id


def role_of(app, org_id, user):
    with app.app_context():
        return db.session.scalar(
            db.select(Membership.role).where(Membership.org_id == org_id, Membership.user_id == user["id"])
        )


def audit(app, action):
    with app.app_context():
        entries = db.session.scalars(db.select(AuditEntry).where(AuditEntry.action == action)).all()
        return [
            {"org_id": e.org_id, "actor_id": e.actor_id, "target_id": e.target_id, "details": e.details}
            for e in entries
        ]


def invitations_of(app, org_id):
    with app.app_context():
        rows = db.session.scalars(db.select(Invitation).where(Invitation.org_id == org_id)).all()
        return [
            {"id": i.id, "email": i.email, "role": i.role, "token_hash": i.token_hash, "accepted": i.accepted_at}
            for i in rows
        ]


def last_link(app):
    """The path of the invitation link in the last email sent."""
    match = LINK.search(outbox(app)[-1].get_content())
    assert match, outbox(app)[-1].get_content()
    return match.group(1)


@pytest.fixture
def team(app, client, make_user, auth):
    """An organization "Acme" owned by `owner`, who is signed in, with an admin, a member and a viewer."""
    people = {role: make_user(email=f"{role}@example.com") for role in ("owner", "admin", "member", "viewer")}
    auth.signin(people["owner"]["email"])
    org_id = create_org(app, client)
    for role in ("admin", "member", "viewer"):
        add_member(app, org_id, people[role], role)
    return {"org_id": org_id, **people}


def act_as(auth, client, team, role):
    auth.signout()
    auth.signin(team[role]["email"])
    use_org(client, team["org_id"])


# Creating, switching, renaming, deleting


def test_create_org_makes_owner(app, client, make_user, auth):
    user = make_user()
    auth.signin(user["email"])

    org_id = create_org(app, client, "  Acme Research ")
    members = client.get("/org/members")

    assert role_of(app, org_id, user) == "owner"
    with app.app_context():
        org = db.session.get(Organization, org_id)
        assert org.name == "Acme Research"
        assert org.personal is False
    assert b"Members of Acme Research" in members.data
    assert audit(app, "org.created") == [
        {"org_id": org_id, "actor_id": user["id"], "target_id": str(org_id), "details": {"name": "Acme Research"}}
    ]


@pytest.mark.parametrize("name", ["", "   ", "x" * 121])
def test_create_org_invalid_name(app, client, make_user, auth, name):
    user = make_user()
    auth.signin(user["email"])

    response = client.post("/orgs/new", data={"name": name})

    assert response.status_code == 422
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(Organization.id))) == 1


def test_switch_between_orgs(app, client, team):
    response = client.post("/orgs/switch", data={"org_id": team["owner"]["org_id"], "next": "/org/members"})
    page = client.get("/org/members")

    assert response.status_code == 302
    assert response.headers["Location"] == "/org/members"
    assert b"workspace" in page.data
    assert b"Members of Acme" not in page.data


def test_next_sign_in_starts_in_last_org(app, client, auth, team):
    client.post("/orgs/switch", data={"org_id": team["owner"]["org_id"]})
    client.post("/orgs/switch", data={"org_id": team["org_id"]})
    auth.signout()
    auth.signin(team["owner"]["email"])

    page = client.get("/org/members")

    assert b"Members of Acme" in page.data


def test_last_org_ignored_after_leaving(app, client, auth, team):
    act_as(auth, client, team, "member")
    client.post("/orgs/switch", data={"org_id": team["org_id"]})
    left = client.post("/org/leave")
    auth.signout()
    auth.signin(team["member"]["email"])

    page = client.get("/org/members")

    assert left.status_code == 302
    assert page.status_code == 200
    assert b"Members of Acme" not in page.data


def test_switch_to_foreign_org_rejected(app, client, team, make_user):
    stranger = make_user()

    response = client.post("/orgs/switch", data={"org_id": stranger["org_id"]})
    missing = client.post("/orgs/switch", data={})
    page = client.get("/org/members")

    assert response.status_code == 404
    assert missing.status_code == 422
    assert b"Members of Acme" in page.data


def test_switcher_in_top_bar(client, team):
    page = client.get("/org/members")

    assert b'action="/orgs/switch"' in page.data
    assert b"Acme (owner)" in page.data
    assert b"workspace (owner)" in page.data


def test_rename_needs_admin(app, client, auth, team):
    act_as(auth, client, team, "member")
    rejected = client.post("/org/rename", data={"name": "Other"})
    act_as(auth, client, team, "admin")
    renamed = client.post("/org/rename", data={"name": "Acme Labs"})
    blank = client.post("/org/rename", data={"name": " "})

    assert rejected.status_code == 403
    assert renamed.status_code == 302
    assert blank.status_code == 422
    with app.app_context():
        assert db.session.get(Organization, team["org_id"]).name == "Acme Labs"
    assert [entry["details"] for entry in audit(app, "org.renamed")] == [{"from": "Acme", "to": "Acme Labs"}]


def test_delete_org_removes_its_data(app, client, auth, team, make_api_key):
    key = make_api_key({**team["owner"], "org_id": team["org_id"]})
    upload = client.post(
        "/api/v1/files/upload",
        data={"file": [(io.BytesIO(b"hello"), "a.txt", "text/plain")]},
        headers=bearer(key),
        content_type="multipart/form-data",
    )
    assert upload.status_code == 201
    client.post("/org/invitations", data={"email": "new@example.com", "role": "member"})
    stored_files = [path for path in Path(app.config["FILE_STORAGE_PATH"]).rglob("*") if path.is_file()]
    assert stored_files

    wrong = client.post("/org/delete", data={"confirm_name": "acme"})
    response = client.post("/org/delete", data={"confirm_name": "Acme"})

    assert wrong.status_code == 422
    assert b"Type the organization&#39;s name, Acme" in wrong.data
    assert response.status_code == 302
    with app.app_context():
        assert db.session.get(Organization, team["org_id"]) is None
        for model in (Membership, Invitation, ApiKey, File):
            count = db.session.scalar(
                db.select(db.func.count()).select_from(model).where(model.org_id == team["org_id"])
            )
            assert count == 0, model.__name__
    assert [path for path in Path(app.config["FILE_STORAGE_PATH"]).rglob("*") if path.is_file()] == []
    deleted = audit(app, "org.deleted")
    assert deleted == [{"org_id": None, "actor_id": team["owner"]["id"], "target_id": str(team["org_id"]),
                        "details": {"name": "Acme"}}]  # fmt: skip
    assert client.get("/org/members").status_code == 200


def test_delete_org_needs_owner(app, client, auth, team):
    act_as(auth, client, team, "admin")

    response = client.post("/org/delete", data={"confirm_name": "Acme"})

    assert response.status_code == 403
    with app.app_context():
        assert db.session.get(Organization, team["org_id"]) is not None


def test_delete_personal_org_refused(app, client, make_user, auth):
    user = make_user()
    auth.signin(user["email"])
    with app.app_context():
        name = db.session.get(Organization, user["org_id"]).name

    response = client.post("/org/delete", data={"confirm_name": name})

    assert response.status_code == 409
    assert b"personal organization cannot be deleted" in response.data
    with app.app_context():
        assert db.session.get(Organization, user["org_id"]) is not None


# Invitations


def test_invite_sends_link_and_stores_hash(app, client, team):
    response = client.post("/org/invitations", data={"email": " New@Example.com ", "role": "admin"})

    assert response.status_code == 302
    message = outbox(app)[-1]
    assert message["To"] == "new@example.com"
    assert message["Subject"] == "Join Acme on Floyo"
    token = parse_qs(urlsplit(last_link(app)).query)["token"][0]
    [invitation] = invitations_of(app, team["org_id"])
    assert invitation["email"] == "new@example.com"
    assert invitation["role"] == "admin"
    assert invitation["token_hash"] == hashlib.sha256(token.encode()).hexdigest()
    [entry] = audit(app, "member.invited")
    assert entry["details"] == {"email": "new@example.com", "role": "admin"}
    assert token not in str(entry)
    page = client.get("/org/members")
    assert b"new@example.com" in page.data
    assert token.encode() not in page.data


def test_invitation_expiry_setting(app, client, team):
    app.config["INVITATION_EXPIRY_DAYS"] = 2

    client.post("/org/invitations", data={"email": "new@example.com", "role": "member"})

    with app.app_context():
        invitation = db.session.scalar(db.select(Invitation))
        lifetime = invitation.expires_at - invitation.created_at
    assert lifetime == timedelta(days=2)


@pytest.mark.parametrize(
    ("email", "role", "status", "message"),
    [
        ("not-an-email", "member", 422, b"is not a valid email address"),
        ("", "member", 422, b"is not a valid email address"),
        ("new@example.com", "superuser", 422, b"Unknown role"),
        ("admin@example.com", "member", 409, b"already a member"),
    ],
)
def test_invite_bad_input(app, client, team, email, role, status, message):
    response = client.post("/org/invitations", data={"email": email, "role": role})

    assert response.status_code == status
    assert message in response.data
    assert invitations_of(app, team["org_id"]) == []
    assert outbox(app) == []


def test_invite_twice_refused(app, client, team):
    client.post("/org/invitations", data={"email": "new@example.com", "role": "member"})

    again = client.post("/org/invitations", data={"email": "new@example.com", "role": "viewer"})

    assert again.status_code == 409
    assert b"already has a pending invitation" in again.data
    assert len(invitations_of(app, team["org_id"])) == 1


def test_personal_org_cannot_invite(app, client, make_user, auth):
    user = make_user()
    auth.signin(user["email"])

    page = client.get("/org/members")
    response = client.post("/org/invitations", data={"email": "new@example.com", "role": "member"})

    assert b"personal organizations cannot be shared" in page.data
    assert response.status_code == 409
    assert b"personal organization cannot be shared" in response.data
    assert invitations_of(app, user["org_id"]) == []


@pytest.mark.parametrize(("role", "invited_role", "status"), [
    ("admin", "owner", 403), ("admin", "admin", 302), ("owner", "owner", 302),
    ("member", "viewer", 403), ("viewer", "viewer", 403),
])  # fmt: skip
def test_invite_role_rules(app, client, auth, team, role, invited_role, status):
    act_as(auth, client, team, role)

    response = client.post("/org/invitations", data={"email": "new@example.com", "role": invited_role})

    assert response.status_code == status
    assert len(invitations_of(app, team["org_id"])) == (1 if status == 302 else 0)


def test_viewer_sees_members_without_controls(client, auth, team):
    act_as(auth, client, team, "viewer")

    page = client.get("/org/members")

    assert page.status_code == 200
    assert b"member@example.com" in page.data
    assert b"Send invitation" not in page.data
    assert b"Change role" not in page.data


def test_signed_out_visitor_signs_in_and_accepts(app, client, auth, team, make_user):
    invitee = make_user(email="new@example.com")
    client.post("/org/invitations", data={"email": "new@example.com", "role": "member"})
    link = last_link(app)
    auth.signout()

    landing = client.get(link)
    signin = client.post(
        "/signin", query_string={"next": link}, data={"email": invitee["email"], "password": invitee["password"]}
    )
    back = client.get(signin.headers["Location"])
    token = parse_qs(urlsplit(link).query)["token"][0]
    accepted = client.post("/invitations/accept", data={"token": token})
    page = client.get("/org/members")

    assert landing.status_code == 200
    assert b"Sign in" in landing.data
    assert b"Create an account" in landing.data
    assert signin.status_code == 302
    assert signin.headers["Location"] == link
    assert b"Join Acme" in back.data
    assert accepted.status_code == 302
    assert role_of(app, team["org_id"], invitee) == "member"
    assert b"Members of Acme" in page.data
    [invitation] = invitations_of(app, team["org_id"])
    assert invitation["accepted"] is not None
    [joined] = audit(app, "member.joined")
    assert joined["org_id"] == team["org_id"]
    assert joined["details"]["role"] == "member"


def test_new_visitor_signs_up_and_comes_back(app, client, auth, team):
    client.post("/org/invitations", data={"email": "fresh@example.com", "role": "viewer"})
    link = last_link(app)
    auth.signout()

    signup = client.post(
        "/signup",
        query_string={"next": link},
        data={"email": "fresh@example.com", "password": "correct horse battery", "confirm": "correct horse battery"},
    )
    token = parse_qs(urlsplit(link).query)["token"][0]
    accepted = client.post("/invitations/accept", data={"token": token})

    assert signup.status_code == 302
    assert signup.headers["Location"] == link
    assert accepted.status_code == 302
    with app.app_context():
        role = db.session.scalar(
            db.select(Membership.role)
            .join(Membership.user)
            .where(Membership.org_id == team["org_id"], Membership.user.has(email="fresh@example.com"))
        )
    assert role == "viewer"


def test_signup_ignores_foreign_next(client):
    response = client.post(
        "/signup",
        query_string={"next": "//evil.example/x"},
        data={"email": "a@example.com", "password": "correct horse battery", "confirm": "correct horse battery"},
    )

    assert response.status_code == 302
    assert response.headers["Location"] == "/"


def invite_and_switch_to(app, client, auth, team, make_user, email="new@example.com"):
    invitee = make_user(email=email)
    client.post("/org/invitations", data={"email": email, "role": "member"})
    token = parse_qs(urlsplit(last_link(app)).query)["token"][0]
    auth.signout()
    auth.signin(email)
    return invitee, token


def test_reused_link_refused(app, client, auth, team, make_user):
    invitee, token = invite_and_switch_to(app, client, auth, team, make_user)
    first = client.post("/invitations/accept", data={"token": token})

    again = client.post("/invitations/accept", data={"token": token})
    page = client.get(f"/invitations/accept?token={token}")

    assert first.status_code == 302
    assert again.status_code == 410
    assert b"already used" in again.data
    assert page.status_code == 410
    assert len(audit(app, "member.joined")) == 1


def test_expired_link_refused(app, client, auth, team, make_user):
    invitee, token = invite_and_switch_to(app, client, auth, team, make_user)
    with app.app_context():
        invitation = db.session.scalar(db.select(Invitation))
        invitation.expires_at = utcnow() - timedelta(seconds=1)
        db.session.commit()

    response = client.post("/invitations/accept", data={"token": token})

    assert response.status_code == 410
    assert b"expired" in response.data
    assert role_of(app, team["org_id"], invitee) is None


def test_wrong_email_refused(app, client, auth, team, make_user):
    make_user(email="new@example.com")
    client.post("/org/invitations", data={"email": "new@example.com", "role": "member"})
    token = parse_qs(urlsplit(last_link(app)).query)["token"][0]
    other = make_user(email="other@example.com")
    auth.signout()
    auth.signin(other["email"])

    page = client.get(f"/invitations/accept?token={token}")
    response = client.post("/invitations/accept", data={"token": token})

    assert b"Sign out and sign in with new@example.com" in page.data
    assert response.status_code == 403
    assert b"sent to new@example.com" in response.data
    assert role_of(app, team["org_id"], other) is None
    assert invitations_of(app, team["org_id"])[0]["accepted"] is None


@pytest.mark.parametrize("token", ["", "made-up-token"])
def test_unknown_link_not_found(client, team, token):
    page = client.get(f"/invitations/accept?token={token}")
    response = client.post("/invitations/accept", data={"token": token})

    assert page.status_code == 404
    assert response.status_code == 404
    assert b"invitation link is invalid" in response.data


def test_revoke_invitation(app, client, auth, team, make_user):
    invitee = make_user(email="new@example.com")
    client.post("/org/invitations", data={"email": "new@example.com", "role": "member"})
    token = parse_qs(urlsplit(last_link(app)).query)["token"][0]
    [invitation] = invitations_of(app, team["org_id"])

    revoked = client.post(f"/org/invitations/{invitation['id']}/revoke")
    again = client.post(f"/org/invitations/{invitation['id']}/revoke")
    auth.signout()
    auth.signin(invitee["email"])
    accept = client.post("/invitations/accept", data={"token": token})

    assert revoked.status_code == 302
    assert again.status_code == 409
    assert accept.status_code == 410
    assert b"revoked" in accept.data
    assert [entry["details"] for entry in audit(app, "invitation.revoked")] == [
        {"email": "new@example.com", "role": "member"}
    ]


def test_other_orgs_invitation_not_found(app, client, auth, team, make_user):
    client.post("/org/invitations", data={"email": "new@example.com", "role": "member"})
    [invitation] = invitations_of(app, team["org_id"])
    stranger = make_user()
    auth.signout()
    auth.signin(stranger["email"])
    other_org = create_org(app, client, "Other")

    response = client.post(f"/org/invitations/{invitation['id']}/revoke")
    role = client.post(f"/org/members/{team['member']['id']}/role", data={"role": "viewer"})
    remove = client.post(f"/org/members/{team['member']['id']}/remove")

    assert other_org != team["org_id"]
    assert response.status_code == 404
    assert role.status_code == 404
    assert remove.status_code == 404
    assert invitations_of(app, team["org_id"])[0]["accepted"] is None
    assert role_of(app, team["org_id"], team["member"]) == "member"


# Member limit


@pytest.fixture
def member_limit(app):
    """Enforce limits (as with Stripe set up) and allow five members on the Free plan."""
    app.config["STRIPE_SECRET_KEY"] = "sk_test_not_called"
    app.config["BILLING_PLANS"]["free"]["limits"]["members"] = 5


def test_member_limit_on_invite(app, client, team, member_limit):
    first = client.post("/org/invitations", data={"email": "fifth@example.com", "role": "member"})

    over = client.post("/org/invitations", data={"email": "sixth@example.com", "role": "member"})

    assert first.status_code == 302
    assert over.status_code == 402
    assert b"plan allows 5 members" in over.data
    assert len(invitations_of(app, team["org_id"])) == 1


def test_member_limit_on_accept(app, client, auth, team, make_user, member_limit):
    invitee, token = invite_and_switch_to(app, client, auth, team, make_user)
    add_member(app, team["org_id"], make_user(), "viewer")

    response = client.post("/invitations/accept", data={"token": token})

    assert response.status_code == 402
    assert b"plan allows 5 members" in response.data
    assert role_of(app, team["org_id"], invitee) is None
    assert invitations_of(app, team["org_id"])[0]["accepted"] is None


# Roles and members


def test_change_role_records_audit(app, client, team):
    response = client.post(f"/org/members/{team['member']['id']}/role", data={"role": "admin"})

    assert response.status_code == 302
    assert role_of(app, team["org_id"], team["member"]) == "admin"
    [entry] = audit(app, "member.role_changed")
    assert entry["details"] == {"from": "member", "to": "admin"}
    assert entry["target_id"] == str(team["member"]["id"])


@pytest.mark.parametrize(("actor", "target", "new_role", "status"), [
    ("admin", "member", "owner", 403),
    ("admin", "owner", "member", 403),
    ("admin", "member", "viewer", 302),
    ("admin", "admin", "member", 302),
    ("member", "viewer", "member", 403),
    ("viewer", "viewer", "member", 403),
    ("owner", "member", "owner", 302),
    ("owner", "member", "king", 422),
])  # fmt: skip
def test_change_role_rules(app, client, auth, team, actor, target, new_role, status):
    act_as(auth, client, team, actor)
    before = role_of(app, team["org_id"], team[target])

    response = client.post(f"/org/members/{team[target]['id']}/role", data={"role": new_role})

    assert response.status_code == status
    assert role_of(app, team["org_id"], team[target]) == (new_role if status == 302 else before)


def test_last_owner_kept(app, client, team):
    demote = client.post(f"/org/members/{team['owner']['id']}/role", data={"role": "admin"})
    remove = client.post(f"/org/members/{team['owner']['id']}/remove")
    leave = client.post("/org/leave")

    for response in (demote, remove, leave):
        assert response.status_code == 409
        assert b"last owner of Acme" in response.data
    assert role_of(app, team["org_id"], team["owner"]) == "owner"


def test_owner_steps_down_after_second_owner(app, client, team):
    client.post(f"/org/members/{team['admin']['id']}/role", data={"role": "owner"})

    response = client.post(f"/org/members/{team['owner']['id']}/role", data={"role": "member"})

    assert response.status_code == 302
    assert role_of(app, team["org_id"], team["owner"]) == "member"
    assert role_of(app, team["org_id"], team["admin"]) == "owner"


def test_remove_member(app, client, auth, team):
    act_as(auth, client, team, "admin")
    removed = client.post(f"/org/members/{team['member']['id']}/remove")
    owner = client.post(f"/org/members/{team['owner']['id']}/remove")
    act_as(auth, client, team, "viewer")
    by_viewer = client.post(f"/org/members/{team['admin']['id']}/remove")

    assert removed.status_code == 302
    assert owner.status_code == 403
    assert by_viewer.status_code == 403
    assert role_of(app, team["org_id"], team["member"]) is None
    assert role_of(app, team["org_id"], team["owner"]) == "owner"
    assert role_of(app, team["org_id"], team["admin"]) == "admin"
    [entry] = audit(app, "member.removed")
    assert entry["details"] == {"email": "member@example.com"}


def test_leave_org(app, client, auth, team):
    act_as(auth, client, team, "viewer")

    response = client.post("/org/leave")
    page = client.get("/org/members")

    assert response.status_code == 302
    assert role_of(app, team["org_id"], team["viewer"]) is None
    assert b"Members of Acme" not in page.data
    assert [entry["actor_id"] for entry in audit(app, "member.left")] == [team["viewer"]["id"]]


def test_leave_personal_org_refused(app, client, make_user, auth):
    user = make_user()
    auth.signin(user["email"])

    response = client.post("/org/leave")

    assert response.status_code == 409
    assert role_of(app, user["org_id"], user) == "owner"


def test_transfer_ownership(app, client, auth, team):
    response = client.post("/org/transfer", data={"user_id": team["member"]["id"]})
    act_as(auth, client, team, "admin")
    by_admin = client.post("/org/transfer", data={"user_id": team["admin"]["id"]})

    assert response.status_code == 302
    assert role_of(app, team["org_id"], team["member"]) == "owner"
    assert role_of(app, team["org_id"], team["owner"]) == "admin"
    assert by_admin.status_code == 403
    [entry] = audit(app, "org.ownership_transferred")
    assert entry["details"]["to_user_id"] == team["member"]["id"]


def test_transfer_to_stranger_not_found(app, client, team, make_user):
    stranger = make_user()

    response = client.post("/org/transfer", data={"user_id": stranger["id"]})
    missing = client.post("/org/transfer", data={})

    assert response.status_code == 404
    assert missing.status_code == 422
    assert role_of(app, team["org_id"], team["owner"]) == "owner"


# JSON API


@pytest.fixture
def keys(team, make_api_key):
    """API keys of each team member for the team's organization."""
    return {role: make_api_key({**team[role], "org_id": team["org_id"]}) for role in ("owner", "admin", "member")}


def test_api_lists_orgs_with_role(client, team, keys):
    response = client.get("/api/v1/orgs", headers=bearer(keys["admin"]))
    current = client.get("/api/v1/orgs/current", headers=bearer(keys["admin"]))

    assert response.status_code == 200
    assert [(org["name"], org["role"]) for org in response.get_json()["data"]] == [
        ("admin's workspace", "owner"),
        ("Acme", "admin"),
    ]
    assert current.get_json()["id"] == team["org_id"]
    assert current.get_json()["role"] == "admin"


def test_api_rename(app, client, team, keys):
    rejected = client.patch("/api/v1/orgs/current", json={"name": "X"}, headers=bearer(keys["member"]))
    blank = client.patch("/api/v1/orgs/current", json={"name": ""}, headers=bearer(keys["admin"]))
    not_json = client.patch("/api/v1/orgs/current", data="name", headers=bearer(keys["admin"]))
    renamed = client.patch("/api/v1/orgs/current", json={"name": "Acme Labs"}, headers=bearer(keys["admin"]))

    assert rejected.status_code == 403
    assert blank.status_code == 422
    assert not_json.status_code == 400
    assert renamed.status_code == 200
    assert renamed.get_json()["name"] == "Acme Labs"
    with app.app_context():
        assert db.session.get(Organization, team["org_id"]).name == "Acme Labs"


def test_api_members(client, team, keys):
    response = client.get("/api/v1/orgs/current/members", headers=bearer(keys["member"]))

    assert response.status_code == 200
    assert [(m["email"], m["role"]) for m in response.get_json()["data"]] == [
        ("owner@example.com", "owner"),
        ("admin@example.com", "admin"),
        ("member@example.com", "member"),
        ("viewer@example.com", "viewer"),
    ]


def test_api_invitation_lifecycle(app, client, team, keys):
    created = client.post(
        "/api/v1/orgs/current/invitations",
        json={"email": "new@example.com", "role": "viewer"},
        headers=bearer(keys["admin"]),
    )
    listed = client.get("/api/v1/orgs/current/invitations", headers=bearer(keys["admin"]))
    by_member = client.get("/api/v1/orgs/current/invitations", headers=bearer(keys["member"]))
    invitation_id = created.get_json()["id"]
    revoked = client.delete(f"/api/v1/orgs/current/invitations/{invitation_id}", headers=bearer(keys["admin"]))
    after = client.get("/api/v1/orgs/current/invitations", headers=bearer(keys["admin"]))

    assert created.status_code == 201
    body = created.get_json()
    assert body["email"] == "new@example.com"
    assert body["status"] == "pending"
    assert "token" not in body
    assert "token_hash" not in body
    token = parse_qs(urlsplit(last_link(app)).query)["token"][0]
    assert token not in created.get_data(as_text=True)
    assert [item["id"] for item in listed.get_json()["data"]] == [invitation_id]
    assert by_member.status_code == 403
    assert revoked.status_code == 204
    assert after.get_json()["data"] == []


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"email": "not-an-email", "role": "member"}, 422, "validation_error"),
        ({"email": "new@example.com", "role": "superuser"}, 422, "validation_error"),
        ({"role": "member"}, 422, "validation_error"),
        ({"email": "new@example.com", "role": "member", "token": "x"}, 422, "validation_error"),
        ({"email": "new@example.com", "role": "owner"}, 403, "forbidden"),
    ],
)
def test_api_invitation_bad_input(app, client, team, keys, body, status, code):
    response = client.post("/api/v1/orgs/current/invitations", json=body, headers=bearer(keys["admin"]))

    assert response.status_code == status
    assert response.get_json()["error"]["code"] == code
    assert invitations_of(app, team["org_id"]) == []


def test_api_other_orgs_invitation_not_found(app, client, team, keys, make_user, make_api_key):
    client.post("/api/v1/orgs/current/invitations", json={"email": "a@example.com"}, headers=bearer(keys["owner"]))
    [invitation] = invitations_of(app, team["org_id"])
    stranger_key = make_api_key(make_user())

    response = client.delete(f"/api/v1/orgs/current/invitations/{invitation['id']}", headers=bearer(stranger_key))
    member = client.patch(
        f"/api/v1/orgs/current/members/{team['member']['id']}", json={"role": "viewer"}, headers=bearer(stranger_key)
    )

    assert response.status_code == 404
    assert member.status_code == 404
    assert len(client.get("/api/v1/orgs/current/invitations", headers=bearer(keys["owner"])).get_json()["data"]) == 1


def test_api_change_and_remove_member(app, client, team, keys):
    unknown = client.patch(
        f"/api/v1/orgs/current/members/{team['member']['id']}", json={"role": "king"}, headers=bearer(keys["admin"])
    )
    changed = client.patch(
        f"/api/v1/orgs/current/members/{team['member']['id']}", json={"role": "viewer"}, headers=bearer(keys["admin"])
    )
    last_owner = client.patch(
        f"/api/v1/orgs/current/members/{team['owner']['id']}", json={"role": "admin"}, headers=bearer(keys["owner"])
    )
    removed = client.delete(f"/api/v1/orgs/current/members/{team['viewer']['id']}", headers=bearer(keys["admin"]))
    missing = client.delete(f"/api/v1/orgs/current/members/{team['viewer']['id']}", headers=bearer(keys["admin"]))

    assert unknown.status_code == 422
    assert changed.status_code == 200
    assert changed.get_json()["role"] == "viewer"
    assert last_owner.status_code == 409
    assert "last owner" in last_owner.get_json()["error"]["message"]
    assert removed.status_code == 204
    assert missing.status_code == 404
    assert role_of(app, team["org_id"], team["member"]) == "viewer"
    assert role_of(app, team["org_id"], team["owner"]) == "owner"
    assert role_of(app, team["org_id"], team["viewer"]) is None


def test_openapi_lists_org_routes(client):
    paths = client.get("/api/v1/openapi.json").get_json()["paths"]

    assert set(paths["/api/v1/orgs/current"]) == {"get", "patch"}
    assert set(paths["/api/v1/orgs/current/invitations"]) == {"get", "post"}
    assert set(paths["/api/v1/orgs/current/members/{user_id}"]) == {"patch", "delete"}
    assert "delete" in paths["/api/v1/orgs/current/invitations/{invitation_id}"]
    assert "get" in paths["/api/v1/orgs"]


def test_removed_member_key_stops_working(client, team, keys):
    before = client.get("/api/v1/orgs/current", headers=bearer(keys["member"]))
    client.delete(f"/api/v1/orgs/current/members/{team['member']['id']}", headers=bearer(keys["owner"]))

    after = client.get("/api/v1/orgs/current", headers=bearer(keys["member"]))

    assert before.status_code == 200
    assert after.status_code == 401
