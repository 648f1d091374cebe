"""Fixture secrets (all fake, made for these tests) and near misses, shared by the masking tests."""

from __future__ import annotations

PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAwFakeFakeFakeFakeFakeFakeFakeFakeFake\n"
    "dGhpcyBpcyBub3QgYSByZWFsIGtleQ==\n-----END RSA PRIVATE KEY-----"
)
AWS_KEY_ID = "AKIAIOSFODNN7EXAMPLE"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
GCP_KEY_ID = "8c2c4c2f9a4b4e1e9d7b6a5f4e3d2c1b0a998877"
OPENAI_KEY = "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z"
GITHUB_TOKEN = "ghp_Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zAb3d"
GITHUB_PAT = "github_pat_11ABCDEFG0123456789abc_defghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVW"
SLACK_TOKEN = "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx"
JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6MX0.c2lnbmF0dXJlLW5vdC1yZWFsLXNpZ25hdHVyZQ"
DB_PASSWORD = "hunter2-Sup3r"
EMAIL = "alice.liddell@example.org"
CARD = "4111 1111 1111 1111"
IBAN = "DE89 3704 0044 0532 0130 00"

# (rule, text containing it, the raw secret that must disappear)
TRUE_POSITIVES: list[tuple[str, str, str]] = [
    ("private_key", f"key:\n{PEM}\nend", "MIIEowIBAAKCAQEAwFake"),
    ("aws_access_key", f"id {AWS_KEY_ID}.", AWS_KEY_ID),
    ("aws_secret_key", f"aws_secret_access_key = {AWS_SECRET}\n", AWS_SECRET),
    ("aws_secret_key", f'"SecretAccessKey": "{AWS_SECRET}"', AWS_SECRET),
    ("gcp_service_account", f'{{"type": "service_account", "private_key_id": "{GCP_KEY_ID}"}}', GCP_KEY_ID),
    ("openai_api_key", f"OPENAI_API_KEY={OPENAI_KEY}", OPENAI_KEY),
    ("openai_api_key", "key sk-" + "a1B2" * 12 + " ok", "a1B2" * 12),
    ("github_token", f"token: {GITHUB_TOKEN}", GITHUB_TOKEN),
    ("github_token", f"{GITHUB_PAT} here", GITHUB_PAT),
    ("slack_token", f"SLACK={SLACK_TOKEN}", SLACK_TOKEN),
    ("jwt", f"Bearer {JWT}", JWT),
    ("connection_string_password", f"postgres://app:{DB_PASSWORD}@db.internal:5432/prod", DB_PASSWORD),
    ("connection_string_password", f"mongodb+srv://root:{DB_PASSWORD}@cluster0", DB_PASSWORD),
    ("email", f"write to {EMAIL}, please", EMAIL),
    ("card_number", f"card {CARD} exp 12/30", CARD),
    ("card_number", "visa 4012888888881881!", "4012888888881881"),
    ("iban", f"IBAN {IBAN}.", IBAN),
    ("iban", "GB82WEST12345698765432", "GB82WEST12345698765432"),
]

# Text that looks close to a secret and must be left alone.
NEAR_MISSES: list[str] = [
    "4111 1111 1111 1112",  # Luhn fails
    "1234567812345678",  # Luhn fails
    "0000 0000 0000 0000",  # passes Luhn, but no card
    "order 20240101123456 shipped",  # 14 digits, Luhn fails
    "chatcmpl-3a94111111111111111",  # a card's digits, but glued to an id
    "AKIAIOSFODNN7EXAMPL",  # 15 characters after AKIA
    "AKIAIOSFODNN7EXAMPLE1",  # 17
    "xAKIAIOSFODNN7EXAMPLE",  # glued to a word
    "sk-short",
    "task-force-alpha-bravo-charlie-delta",  # sk- inside a word
    "ghp_tooShort123",
    "xoxb-short",
    "eyJhbGci.eyJzdWIi.sig",  # parts too short
    "https://example.com:8443/path?q=1",  # no userinfo
    "redis://cache:6379/0",  # host:port, no userinfo
    "ftp://anonymous:@files",  # empty password
    "not an email@",
    "user@localhost",  # no dot in the domain
    "DE88 3704 0044 0532 0130 00",  # IBAN check digits wrong
    "DE89370400440532013001",  # IBAN checksum fails
    "GB82WEST1234569876543",  # GB length wrong
    "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkq\n-----END PUBLIC KEY-----",
    "-----BEGIN RSA PRIVATE KEY-----\nno end line",
    AWS_SECRET,  # 40 base64 characters without a name saying what they are
    f'"private_key_id": "{GCP_KEY_ID[:39]}"',
    "version 1.2.3 at 10:45",
]
