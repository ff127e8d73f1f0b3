"""Social accounts: import with tokens, encryption at rest, listing, disconnect."""

from __future__ import annotations

import json

from .helpers import fetch, future


async def test_import_encrypts_tokens_and_never_returns_them(make_tenant, engine, app):
    tenant = await make_tenant(accounts=0)
    response = await tenant.post(
        "/social-accounts",
        json={
            "platform": "LINKEDIN_PERSON",
            "handle": "jane",
            "displayName": "Jane",
            "credentials": {
                "accessToken": "super-secret-access",
                "refreshToken": "super-secret-refresh",
                "expiresAt": "2030-05-01T00:00:00Z",
            },
        },
    )
    assert response.status_code == 201
    account = response.json()
    assert account["id"].startswith("soc_")
    assert account["status"] == "ACTIVE"
    assert account["tokenExpiresAt"] == "2030-05-01T00:00:00Z"
    assert "super-secret" not in response.text
    rows = await fetch(engine, "SELECT credentials_encrypted FROM social_accounts WHERE id = :id", id=account["id"])
    stored = bytes(rows[0].credentials_encrypted)
    assert b"super-secret" not in stored
    decrypted = app.state.cipher.decrypt_json(stored)
    assert decrypted["accessToken"] == "super-secret-access"
    assert decrypted["refreshToken"] == "super-secret-refresh"
    listed = await tenant.get("/social-accounts")
    assert "super-secret" not in listed.text
    assert [a["id"] for a in listed.json()["data"]] == [account["id"]]


async def test_reimport_reconnects_the_same_account(make_tenant):
    tenant = await make_tenant(accounts=0)
    body = {"platform": "X", "handle": "Brand", "credentials": {"accessToken": "a1"}}
    first = await tenant.post("/social-accounts", json=body)
    again = await tenant.post(
        "/social-accounts", json={**body, "handle": "brand", "credentials": {"accessToken": "a2"}}
    )
    assert first.status_code == 201 and again.status_code == 200
    assert first.json()["id"] == again.json()["id"]
    actions = [e["action"] for e in (await tenant.get("/audit-log")).json()["data"]]
    assert "account.reconnect" in actions and "account.connect" in actions


async def test_import_validation(make_tenant):
    tenant = await make_tenant(accounts=0)
    cases = [
        {"platform": "MYSPACE", "handle": "x", "credentials": {"accessToken": "a"}},
        {"platform": "X", "handle": "x", "credentials": {}},
        {"platform": "X", "handle": "", "credentials": {"accessToken": "a"}},
        {"platform": "X", "handle": "x", "credentials": {"accessToken": "a", "expiresAt": "soon"}},
        {"platform": "BLUESKY", "handle": "x.bsky.social", "credentials": {"accessToken": "a"}},
    ]
    for body in cases:
        response = await tenant.post("/social-accounts", json=body)
        assert response.status_code == 400, (body, response.text)
    assert (await tenant.get("/social-accounts")).json()["data"] == []


async def test_import_needs_admin_and_scope(make_tenant):
    tenant = await make_tenant(accounts=0)
    editor = await tenant.make_key(role="EDITOR", email="ed-acc@example.com")
    body = {"platform": "X", "handle": "x", "credentials": {"accessToken": "a"}}
    assert (await tenant.post("/social-accounts", key=editor, json=body)).json()["code"] == "FORBIDDEN_ROLE"
    no_scope = await tenant.make_key(scopes=["accounts:read"])
    assert (await tenant.post("/social-accounts", key=no_scope, json=body)).json()["code"] == "FORBIDDEN_SCOPE"
    reader = await tenant.make_key(scopes=["posts:read"])
    assert (await tenant.get("/social-accounts", key=reader)).json()["code"] == "FORBIDDEN_SCOPE"


async def test_delete_account(tenant, engine):
    account = tenant.accounts[1]
    response = await tenant.delete(f"/social-accounts/{account['id']}")
    assert response.status_code == 200
    assert (await tenant.get(f"/social-accounts/{account['id']}")).status_code == 404
    rows = await fetch(
        engine, "SELECT deleted_at, credentials_encrypted FROM social_accounts WHERE id = :id", id=account["id"]
    )
    assert rows[0].deleted_at is not None and rows[0].credentials_encrypted is None
    response = await tenant.post("/posts", json={"platforms": [{"accountId": account["id"]}]})
    assert response.status_code == 400
    audit = (await tenant.get("/audit-log?action=account.delete")).json()["data"]
    assert audit[0]["subjectId"] == account["id"]


async def test_delete_account_with_scheduled_posts_is_409(tenant):
    await tenant.create_post(scheduledFor=future(hours=1))
    response = await tenant.delete(f"/social-accounts/{tenant.accounts[0]['id']}")
    assert response.status_code == 409
    assert (await tenant.get(f"/social-accounts/{tenant.accounts[0]['id']}")).status_code == 200


async def test_secret_key_rotation_keeps_tokens_readable(tmp_path):
    from cryptography.fernet import Fernet

    from postwright.kit.crypto import TokenCipher

    old_key, new_key = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    token = TokenCipher([old_key]).encrypt_json({"accessToken": "t"})
    rotated = TokenCipher([new_key, old_key])
    assert rotated.decrypt_json(token) == {"accessToken": "t"}
    assert TokenCipher([new_key]).decrypt_json(rotated.rotate(token)) == {"accessToken": "t"}


async def test_generated_secret_key_lives_in_data_dir(tmp_path):
    from postwright.kit.crypto import load_or_create_keys

    first = load_or_create_keys(None, tmp_path)
    assert (tmp_path / "secret.key").exists()
    assert oct((tmp_path / "secret.key").stat().st_mode)[-3:] == "600"
    assert load_or_create_keys(None, tmp_path) == first
    assert load_or_create_keys("k1,k2", tmp_path) == ["k1", "k2"]


async def test_logs_never_contain_secrets():
    import io

    import structlog

    from postwright.log_config import configure_logging

    stream = io.StringIO()
    configure_logging("INFO", stream=stream)
    structlog.get_logger("t").info(
        "account.import", accessToken="tok-123", header="Bearer abc.def", key="pw_live_XYZ123"
    )
    out = stream.getvalue()
    line = json.loads(out.strip().splitlines()[-1])
    assert "tok-123" not in out and "abc.def" not in out and "pw_live_XYZ123" not in out
    assert line["accessToken"] == "[redacted]"
