"""Our signatures are the ones the Standard Webhooks reference library computes and accepts."""

import base64
from datetime import UTC, datetime

from standardwebhooks import Webhook

from actors import signing
from storage.webhooks import generate_secret, secret_key


def test_secrets_are_whsec_and_32_random_bytes():
    a, b = generate_secret(), generate_secret()
    assert a.startswith("whsec_") and a != b
    assert len(secret_key(a)) == 32 and secret_key(a) == base64.b64decode(a[6:])


def test_signature_matches_the_reference_library():
    secret = generate_secret()
    body = b'{"specversion":"1.0","data":{"x":"\xc3\xa9"}}'
    ts = 1_700_000_000
    ours = signing.sign(secret, "msg_1", ts, body)
    theirs = Webhook(secret).sign("msg_1", datetime.fromtimestamp(ts, tz=UTC), body.decode())
    assert ours == theirs and ours.startswith("v1,")


def test_several_secrets_make_a_space_separated_header_any_of_which_verifies():
    old, new = generate_secret(), generate_secret()
    body = b'{"a":1}'
    import time

    ts = int(time.time())
    headers = signing.headers([new, old], "msg_2", ts, body)
    assert headers["webhook-id"] == "msg_2" and headers["webhook-timestamp"] == str(ts)
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):
        assert Webhook(secret).verify(body, headers) == {"a": 1}
