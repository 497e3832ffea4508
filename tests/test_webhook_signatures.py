"""Signed webhooks (the Standard Webhooks scheme Replicate documents), checked by a verifier
written here from the scheme's description, against a real service and a real receiver."""

import base64
import hashlib
import hmac
import json
import logging
import os
import time

import pytest

from http_helpers import call, running
from minicog.server.webhooks import WebhookDispatcher
from minicog.settings import Settings
from support import Receiver

KEY = os.urandom(24)
SECRET = "whsec_" + base64.b64encode(KEY).decode()


class Rejected(Exception):
    pass


def verify(secret: str, headers: dict, body: bytes, *, now: float = None, tolerance: float = 300) -> None:
    """A receiver's check, from the scheme: raise Rejected unless the request is authentic.

    1. webhook-id, webhook-timestamp and webhook-signature must all be present;
    2. the timestamp (Unix seconds) must be within *tolerance* of now (replay protection);
    3. the key is the base64 text after ``whsec_``;
    4. the expected signature is base64(HMAC-SHA256(key, "<id>.<timestamp>.<raw body>"));
    5. the header is a space-separated list of ``<version>,<signature>``; one ``v1`` entry
       equal to the expected signature (constant-time comparison) makes it authentic.
    """
    try:
        msg_id, ts, sig_header = headers["webhook-id"], headers["webhook-timestamp"], headers["webhook-signature"]
    except KeyError as exc:
        raise Rejected(f"missing header {exc}")
    if abs((now or time.time()) - int(ts)) > tolerance:
        raise Rejected("timestamp outside the tolerance")
    key = base64.b64decode(secret.split("_", 1)[1])
    signed = msg_id.encode() + b"." + ts.encode() + b"." + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    for entry in sig_header.split(" "):
        version, _, signature = entry.partition(",")
        if version == "v1" and hmac.compare_digest(signature, expected):
            return
    raise Rejected("no matching signature")


FAST = dict(webhook_backoff_base=0.01, webhook_timeout=3.0, throttle_response_interval=0.0)


def test_every_webhook_of_a_prediction_is_signed_and_a_tampered_one_is_rejected():
    with Receiver() as rx, running("http_echo.py", settings=dict(webhook_secret=SECRET)) as svc:
        r = call(svc, "POST", "/predictions", {"input": {"text": "signed"}, "webhook": rx.url + "/hook"})
        assert r.status == 200 and r.json()["status"] == "succeeded"
        done = rx.wait_for(lambda rs: [q for q in rs if q.json()["status"] == "succeeded"])
        requests = list(rx.requests)
        assert len(requests) >= 2  # start (and logs/output) then completed
        for q in requests:
            verify(SECRET, q.headers, q.body)
            assert q.headers["webhook-id"].startswith("msg_")
        # One id per event, not per prediction.
        assert len({q.headers["webhook-id"] for q in requests}) == len(requests)
        final = done[0]
        tampered = final.body.replace(b'"succeeded"', b'"failed"')
        assert tampered != final.body
        with pytest.raises(Rejected):
            verify(SECRET, final.headers, tampered)
        other = "whsec_" + base64.b64encode(os.urandom(24)).decode()
        with pytest.raises(Rejected):
            verify(other, final.headers, final.body)
        with pytest.raises(Rejected):
            verify(SECRET, final.headers, final.body, now=int(final.headers["webhook-timestamp"]) + 3600)


def test_webhook_id_is_stable_across_retries_and_each_attempt_is_signed_afresh():
    answers = [503, 500, 200]

    def responder(rec):
        return answers.pop(0), {}, b""

    with Receiver(responder) as rx:
        d = WebhookDispatcher(Settings(webhook_secret=SECRET, **FAST))
        s = d.sender(rx.url, "p-retry")
        s.send("completed", {"id": "p-retry", "status": "succeeded", "output": "x"})
        assert s.wait(10) and s.terminal_delivered is True
        assert len(rx.requests) == 3
        ids = {q.headers["webhook-id"] for q in rx.requests}
        assert ids == {s.webhook_id}
        for q in rx.requests:
            verify(SECRET, q.headers, q.body)
        d.close()


def test_a_streamed_file_output_body_is_signed_over_the_bytes_sent(tmp_path):
    with Receiver() as rx, running("http_files.py", settings=dict(webhook_secret=SECRET)) as svc:
        r = call(svc, "POST", "/predictions", {"input": {"size": 300000}, "webhook": rx.url,
                                               "webhook_events_filter": ["completed"]})
        assert r.status == 200
        (q,) = rx.wait_for(lambda rs: rs)
        verify(SECRET, q.headers, q.body)
        assert json.loads(q.body)["output"][0].startswith("data:")


def test_without_a_secret_ids_and_timestamps_are_sent_but_no_signature():
    with Receiver() as rx:
        d = WebhookDispatcher(Settings(**FAST))
        s = d.sender(rx.url, "p1")
        s.send("completed", {"id": "p1", "status": "succeeded"})
        assert s.wait(5)
        h = rx.requests[0].headers
        assert h["webhook-id"].startswith("msg_") and abs(int(h["webhook-timestamp"]) - time.time()) < 60
        assert "webhook-signature" not in h
        d.close()


@pytest.mark.parametrize("value", ["whsec_not base64!", "whsec_", "plain words"])
def test_a_malformed_secret_is_refused_with_a_warning_that_does_not_show_it(value, caplog):
    with caplog.at_level(logging.WARNING, logger="minicog.settings"):
        s = Settings.from_env({"MINICOG_WEBHOOK_SECRET": value})
    assert s.webhook_secret is None
    assert "MINICOG_WEBHOOK_SECRET" in caplog.text and value not in caplog.text


def test_the_secret_is_read_from_the_environment_and_kept_out_of_repr():
    s = Settings.from_env({"MINICOG_WEBHOOK_SECRET": SECRET})
    assert s.webhook_secret == SECRET
    assert SECRET not in repr(s)
