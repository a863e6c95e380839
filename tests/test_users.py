"""The users file and ``audit-dashboard users ...``: no database needed."""

from __future__ import annotations

import stat
import tomllib

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from dashboard.cli import main
from dashboard.users import (
    PASSWORD_HASHER,
    UserError,
    UsersFileError,
    UserStore,
    _toml_string,
    ensure_demo_users,
    is_well_formed_token,
)

PASSWORD = "correct horse battery"


@pytest.fixture
def store(tmp_path):
    return UserStore(tmp_path / "users.toml")


def test_add_list_verify(store):
    store.add("Ann.Auditor", "auditor", PASSWORD)
    [user] = store.list()
    assert (user.name, user.role) == ("ann.auditor", "auditor")
    assert store.verify("ann.auditor", PASSWORD) == user
    assert store.verify("ANN.auditor", PASSWORD) == user  # names are case-insensitive
    assert store.verify("ann.auditor", PASSWORD + "x") is None
    assert store.verify("nobody", PASSWORD) is None


def test_passwords_are_argon2id_with_owasp_parameters(store):
    store.add("ann", "auditor", PASSWORD)
    text = store.path.read_text()
    assert PASSWORD not in text
    assert "$argon2id$v=19$m=19456,t=2,p=1$" in text


def test_file_is_private_and_valid_toml(store):
    store.add("ann", "auditor", PASSWORD)
    store.issue_token("ann")
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    data = tomllib.loads(store.path.read_text())
    assert data["users"]["ann"]["role"] == "auditor"
    assert len(data["users"]["ann"]["tokens"]) == 1
    assert not list(store.path.parent.glob(".users.toml.*"))  # no temporary file left


def test_duplicate_bad_role_bad_name_short_password(store):
    store.add("ann", "auditor", PASSWORD)
    with pytest.raises(UserError, match="already exists"):
        store.add("ANN", "support", PASSWORD)
    with pytest.raises(UserError, match="not a role"):
        store.add("bob", "admin", PASSWORD)
    with pytest.raises(UserError, match="not a valid user name"):
        store.add("bob smith", "support", PASSWORD)
    with pytest.raises(UserError, match="at least 12"):
        store.add("bob", "support", "short")


def test_remove_and_set_password(store):
    store.add("ann", "auditor", PASSWORD)
    store.set_password("ann", "another long password")
    assert store.verify("ann", PASSWORD) is None
    assert store.verify("ann", "another long password") is not None
    store.remove("ann")
    assert store.list() == []
    with pytest.raises(UserError, match="no user ann"):
        store.remove("ann")


def test_fingerprint_changes_with_password_and_role(store):
    store.add("ann", "auditor", PASSWORD)
    before = store.get("ann").session_fingerprint
    store.set_password("ann", "another long password")
    after_password = store.get("ann").session_fingerprint
    store.set_role("ann", "support")
    assert len({before, after_password, store.get("ann").session_fingerprint}) == 3


def test_tokens_issue_lookup_revoke(store):
    store.add("bot", "compliance", None)
    first, second = store.issue_token("bot"), store.issue_token("bot")
    assert is_well_formed_token(first) and first != second
    assert store.user_for_token(first).name == "bot"
    assert first.split("_", 2)[2] not in store.path.read_text()  # only the digest is kept
    first_id = first.split("_")[1]
    assert store.revoke_token("bot", first_id) == 1
    assert store.user_for_token(first) is None
    assert store.user_for_token(second).name == "bot"
    assert store.revoke_token("bot", all_tokens=True) == 1
    assert store.user_for_token(second) is None
    with pytest.raises(UserError, match="no token"):
        store.revoke_token("bot", first_id)


def test_revoke_by_the_token_itself(store):
    store.add("bot", "compliance", None)
    token = store.issue_token("bot")
    assert store.revoke_token("bot", token) == 1


@pytest.mark.parametrize(
    "token",
    ["", "adt_", "Bearer x", "adt_0123456789ab_short", "adt_XYZ456789abc_" + "a" * 43],
)
def test_malformed_tokens_find_nobody(store, token):
    store.add("bot", "compliance", None)
    store.issue_token("bot")
    assert not is_well_formed_token(token)
    assert store.user_for_token(token) is None


def test_user_without_password_cannot_sign_in(store):
    store.add("sso.user", "support", None)
    assert store.verify("sso.user", "") is None
    assert store.verify("sso.user", PASSWORD) is None


def test_changes_by_another_process_are_seen(store, tmp_path):
    store.add("ann", "auditor", PASSWORD)
    token = store.issue_token("ann")
    assert store.user_for_token(token) is not None
    UserStore(store.path).revoke_token("ann", all_tokens=True)  # e.g. the CLI
    assert store.user_for_token(token) is None


def test_outdated_hash_is_upgraded_on_sign_in(store):
    from argon2 import PasswordHasher

    store.add("ann", "auditor", PASSWORD)
    weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(PASSWORD)
    text = store.path.read_text()
    old_hash = tomllib.loads(text)["users"]["ann"]["password_hash"]
    store.path.write_text(text.replace(old_hash, weak))
    assert store.verify("ann", PASSWORD) is not None
    assert not PASSWORD_HASHER.check_needs_rehash(store.get("ann").password_hash)


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ('[users."ann"]\nrole = "auditor"\nrole2 = = 1\n', 3, "not valid TOML"),
        ('[users."ann"]\nrole = "admin"\n', 2, "role 'admin'"),
        ('# users\n\n[users.ann]\nrole = "auditor"\npasword_hash = "x"\n', 5, "unknown key"),
        ('[users."ann"]\nrole = "auditor"\npassword_hash = "plain"\n', 3, "argon2"),
        ('[users."bad name"]\nrole = "auditor"\n', 1, "not a valid user name"),
        (
            '[users.ann]\nrole = "auditor"\n\n[[users.ann.tokens]]\nid = "abc"\nsha256 = "0"\n',
            4,
            "token id",
        ),
        ('[users.ann]\nrole = "auditor"\n\n[groups]\nx = 1\n', 4, "unknown key 'groups'"),
    ],
)
def test_bad_file_names_file_and_line(store, text, line, message):
    store.path.write_text(text)
    with pytest.raises(UsersFileError) as caught:
        store.list()
    assert caught.value.line == line
    assert str(store.path) in str(caught.value)
    assert f"line {line}" in str(caught.value)
    assert message in str(caught.value)


def test_hand_written_file_is_accepted(store):
    hashed = PASSWORD_HASHER.hash(PASSWORD)
    store.path.write_text(
        f"# our users\n[users.'Ann']  # the auditor\nrole = 'auditor'\npassword_hash = '{hashed}'\n"
    )
    assert store.verify("ann", PASSWORD).role == "auditor"


def test_ensure_demo_users_is_idempotent(tmp_path):
    path = tmp_path / "users.toml"
    passwords = {"auditor": "pw-a", "compliance": "pw-c", "support": "pw-s"}
    ensure_demo_users(path, passwords)
    ensure_demo_users(path, passwords)
    store = UserStore(path)
    assert [(u.name, u.role) for u in store.list()] == [
        ("auditor", "auditor"),
        ("compliance", "compliance"),
        ("support", "support"),
    ]
    ensure_demo_users(path, {"support": "new-pw"})
    assert store.verify("support", "new-pw") is not None
    assert store.verify("auditor", "pw-a") is not None


@settings(max_examples=200)
@given(st.text())
def test_toml_strings_round_trip(text):
    try:
        written = _toml_string(text)
    except UserError:
        assert any(0xD800 <= ord(c) <= 0xDFFF for c in text)
        return
    assert tomllib.loads(f"x = {written}\n")["x"] == text


# --- the command line ---------------------------------------------------------------------


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.setenv("AUDIT_USERS_FILE", str(tmp_path / "cli-users.toml"))
    runner = CliRunner()

    def invoke(*args, input=None):
        return runner.invoke(main, ["users", *args], input=input, catch_exceptions=False)

    return invoke


def test_cli_add_list_token_revoke_remove(run, tmp_path):
    added = run("add", "Carl", "--role", "compliance", "--password-stdin", input=PASSWORD + "\n")
    assert added.exit_code == 0, added.output
    store = UserStore(tmp_path / "cli-users.toml")
    assert store.verify("carl", PASSWORD) is not None

    issued = run("token", "carl")
    assert issued.exit_code == 0
    token = issued.stdout.strip()
    assert is_well_formed_token(token)
    assert "Store it now" in issued.stderr
    assert store.user_for_token(token).name == "carl"

    listed = run("list")
    assert "carl" in listed.stdout and "compliance" in listed.stdout
    assert token.split("_")[1] in listed.stdout
    assert "$argon2" not in listed.stdout

    revoked = run("revoke-token", "carl", token.split("_")[1])
    assert revoked.exit_code == 0
    assert store.user_for_token(token) is None

    assert run("remove", "carl").exit_code == 0
    assert store.list() == []


def test_cli_passwd_from_prompt(run, tmp_path):
    run("add", "ann", "--role", "auditor", "--password-stdin", input=PASSWORD + "\n")
    changed = run("passwd", "ann", input="a brand new password\na brand new password\n")
    assert changed.exit_code == 0, changed.output
    assert UserStore(tmp_path / "cli-users.toml").verify("ann", "a brand new password")


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["add", "x", "--role", "admin", "--password-stdin"], PASSWORD, "Invalid value"),
        (["add", "x", "--role", "support", "--password-stdin"], "short\n", "at least 12"),
        (["add", "bad name", "--role", "support", "--password-stdin"], PASSWORD, "valid user"),
        (["remove", "ghost"], None, "no user ghost"),
        (["passwd", "ghost", "--password-stdin"], PASSWORD, "no user ghost"),
        (["token", "ghost"], None, "no user ghost"),
        (["revoke-token", "ghost"], None, "TOKEN_ID"),
    ],
)
def test_cli_bad_input_exits_2_with_a_message(run, args, stdin, message):
    result = run(*args, input=stdin)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_cli_bad_file_names_the_line(run, tmp_path):
    (tmp_path / "cli-users.toml").write_text('[users.ann]\nrole = "boss"\n')
    result = run("list")
    assert result.exit_code == 2
    assert "line 2" in result.output and "boss" in result.output


def test_cli_without_users_file(monkeypatch):
    monkeypatch.delenv("AUDIT_USERS_FILE", raising=False)
    result = CliRunner().invoke(main, ["users", "list"])
    assert result.exit_code == 2
    assert "AUDIT_USERS_FILE is not set" in result.output
