"""The service runs only code from holders of the secret. Each kind of bad
message is published straight to the request queue; the task must not run
and its payload must not even be unpickled (it would leave a file behind),
the rejection is logged with its reason and message id (never the body),
and no response goes back."""
from __future__ import annotations

import logging
import struct

import pytest

from conftest import wait_for
from test_remote_support import SECRET, Broker, TouchOnUnpickle, add, broker, touch, unique

LIMIT = 8 * 1024
BODY_MARK = "BODY-MARK-" + "z" * 16  # a string carried in every payload


@pytest.fixture
def env(tmp_path, caplog):
    from pysched_lightning.remote import Client, Service
    url = broker()
    probe = Broker(url)
    name, client_name = unique("svc"), unique("client")
    probe.track(f"{name}.requests", f"{name}.replies.{client_name}")
    service = Service(name, url, f"sqlite:///{tmp_path}/s.db", SECRET, max_message_size=LIMIT)
    caplog.set_level(logging.INFO, logger="pysched_lightning.remote")
    service.start(block=False)
    client = Client(client_name, service=name, broker=url, secret=SECRET)
    yield probe, service, client, caplog
    client.close()
    service.stop()
    probe.close()


def trapped(tmp_path, tag, **options):
    """A signed-able request: unpickling creates <tag>.unpickled, running <tag>.ran."""
    from pysched_lightning.remote import Request
    return Request(touch, (str(tmp_path / f"{tag}.ran"),
                           TouchOnUnpickle(str(tmp_path / f"{tag}.unpickled")), BODY_MARK),
                   message_id=unique(tag), **options)


def body_of(request, client_name, service_name):
    from pysched_lightning.remote.messages import encode_request
    import time
    return encode_request(request, client_name, time.time(), service_name)[1]


def signature(body, key=SECRET):
    from pysched_lightning.remote.protocol import sign
    return {"x-psl-signature": sign(key.encode() if isinstance(key, str) else key, body)}


def rejected(caplog, message_id):
    return [r for r in caplog.records if r.levelno == logging.WARNING
            and "rejected message" in r.getMessage() and repr(message_id) in r.getMessage()]


def reframed(body, version=None, header=None):
    """*body* with another version byte, or another JSON header."""
    from pysched_lightning.remote.protocol import frame, unframe
    if version is not None:
        return body[:3] + struct.pack(">B", version) + body[4:]
    old, payload = unframe(body)
    return frame({**old, **header}, payload)


CASES = {
    "unsigned": lambda body: (body, None),
    "wrong-key": lambda body: (body, signature(body, "another secret")),
    "tampered": lambda body: (body[:-2] + b"!!", signature(body)),
    "garbage": lambda body: (b"\x80\x04K\x01." + body[8:], signature(b"\x80\x04K\x01." + body[8:])),
    "bad-field": lambda body: (reframed(body, header={"hard": "yes"}),
                               signature(reframed(body, header={"hard": "yes"}))),
    "not-a-task": lambda body: (reframed(body, header={"kind": "response"}),
                                signature(reframed(body, header={"kind": "response"}))),
    "version-9": lambda body: (reframed(body, version=9), signature(reframed(body, version=9))),
    "oversized": lambda body: (body + b"p" * LIMIT, signature(body + b"p" * LIMIT)),
}
REASONS = {"unsigned": "unsigned", "wrong-key": "wrong signature", "tampered": "wrong signature",
           "garbage": "malformed", "bad-field": "malformed", "not-a-task": "malformed",
           "version-9": "unknown protocol version 9", "oversized": "too large"}


def test_the_control_a_good_message_runs_and_unpickles(env, tmp_path):
    probe, service, client, caplog = env
    request = trapped(tmp_path, "good")
    body = body_of(request, client.name, service.name)
    probe.publish(f"{service.name}.requests", body, signature(body), request.message_id)
    assert client.sync_await_response(request.message_id, timeout=30).status == "completed"
    assert (tmp_path / "good.ran").exists() and (tmp_path / "good.unpickled").exists()


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_bad_message_is_rejected_unread_and_unanswered(env, tmp_path, case):
    probe, service, client, caplog = env
    request = trapped(tmp_path, case)
    body, headers = CASES[case](body_of(request, client.name, service.name))
    probe.publish(f"{service.name}.requests", body, headers, request.message_id)
    records = wait_for(lambda: rejected(caplog, request.message_id))
    assert REASONS[case] in records[0].getMessage()
    control = client.task(add).launch(1, 1)  # queued behind it: once answered, it was seen
    assert client.sync_await_response(control, timeout=30).result == 2
    assert not (tmp_path / f"{case}.unpickled").exists()
    assert not (tmp_path / f"{case}.ran").exists()
    assert client.get_response(request.message_id) is None
    assert BODY_MARK not in caplog.text
    assert probe.ready(f"{service.name}.requests") == 0  # settled, not left to loop


def test_a_forged_response_is_dropped_by_the_client(env, tmp_path):
    from pysched_lightning.remote.messages import encode_response
    probe, service, client, caplog = env
    forged = encode_response("forged-id", "completed",
                             TouchOnUnpickle(str(tmp_path / "client.unpickled")))
    probe.publish(f"{service.name}.replies.{client.name}", forged,
                  signature(forged, "not the secret"), "forged-id")
    # get_response() reads what has arrived: the forgery is read, and dropped.
    wait_for(lambda: client.get_response("forged-id") is None
             and "dropped a response 'forged-id': wrong signature" in caplog.text)
    assert not (tmp_path / "client.unpickled").exists()


def test_no_secret_is_an_error_unless_insecure_is_explicit(tmp_path):
    from pysched_lightning.remote import Client, Service
    with pytest.raises(ValueError, match="insecure=True"):
        Service("svc", "amqp://localhost", f"sqlite:///{tmp_path}/s.db")
    with pytest.raises(ValueError, match="insecure=True"):
        Client("c", broker="amqp://localhost")
    with pytest.raises(ValueError, match="empty"):
        Service("svc", "amqp://localhost", f"sqlite:///{tmp_path}/s.db", secret=b"")


def test_insecure_true_works_without_a_secret(tmp_path):
    from pysched_lightning.remote import Client, Service
    url = broker()
    probe = Broker(url)
    name, client_name = unique("svc"), unique("client")
    probe.track(f"{name}.requests", f"{name}.replies.{client_name}")
    service = Service(name, url, f"sqlite:///{tmp_path}/s.db", insecure=True)
    service.start(block=False)
    try:
        with Client(client_name, service=name, broker=url, insecure=True) as client:
            response = client.sync_await_response(client.task(add).launch(2, 2), timeout=30)
        assert response.result == 4
    finally:
        service.stop()
        probe.close()


# ------------------------------------------------------------------ hostile input, and what follows it


def control_runs(client, timeout=15):
    """A task launched now is answered: the service (and this client) go on."""
    return client.sync_await_response(client.task(add).launch(2, 3), timeout=timeout).result == 5


def test_a_request_whose_headers_pika_cannot_decode_is_rejected_and_tasks_behind_it_run(env):
    probe, service, client, caplog = env
    message_id = unique("late")
    probe.publish_undecodable(f"{service.name}.requests", b"PSL anything", message_id)
    assert control_runs(client)
    records = wait_for(lambda: rejected(caplog, message_id))
    assert "undecodable AMQP properties (OverflowError" in records[0].getMessage()
    assert len(rejected(caplog, message_id)) == 1  # logged once: it does not come back
    assert probe.ready(f"{service.name}.requests") == 0
    assert "connection lost" not in caplog.text and "unexpected failure" not in caplog.text


def test_a_response_pika_cannot_decode_is_dropped_and_the_client_goes_on(env):
    from pysched_lightning.remote import Client
    probe, service, client, caplog = env
    probe.publish_undecodable(f"{service.name}.replies.{client.name}", b"x", "late-response")
    assert control_runs(client)
    assert "dropped a response 'late-response': undecodable AMQP properties" in caplog.text
    # One waiting for a client not started yet: that client starts, and reads.
    fresh = unique("client")
    probe.track(f"{service.name}.replies.{fresh}")
    probe.publish_undecodable(f"{service.name}.replies.{fresh}", b"x", "late-for-fresh")
    with Client(fresh, service=service.name, broker=broker(), secret=SECRET) as again:
        assert control_runs(again)
    assert probe.ready(f"{service.name}.replies.{fresh}") == 0


def deeply_nested(request, client_name, service_name):
    """The request with a field nested so deep that json.loads gives up (RecursionError)."""
    import json
    from pysched_lightning.remote.protocol import PROTOCOL_VERSION, unframe
    header, payload = unframe(body_of(request, client_name, service_name))
    head = json.dumps(header)[:-1].encode() + b', "deep": ' + b"[" * 3000 + b"]" * 3000 + b"}"
    return b"PSL" + struct.pack(">BI", PROTOCOL_VERSION, len(head)) + head + payload


def huge_number(request, client_name, service_name):
    """The request sent at 10**400 (math.isfinite() raises OverflowError for it)."""
    return reframed(body_of(request, client_name, service_name), header={"sent": 10**400})


@pytest.mark.parametrize("make, reason", [(deeply_nested, "nested too deeply"),
                                          (huge_number, "sent must be a finite number")])
def test_a_signed_request_whose_checks_fail_oddly_is_rejected(env, tmp_path, make, reason):
    probe, service, client, caplog = env
    request = trapped(tmp_path, make.__name__)
    body = make(request, client.name, service.name)
    probe.publish(f"{service.name}.requests", body, signature(body), request.message_id)
    assert control_runs(client)
    assert reason in wait_for(lambda: rejected(caplog, request.message_id))[0].getMessage()
    assert not (tmp_path / f"{make.__name__}.unpickled").exists()


def test_a_request_captured_for_one_service_does_not_run_on_another(env, tmp_path):
    """Both services share the secret; the signed name of the service does not match."""
    from pysched_lightning.remote import Client
    probe, service, client, caplog = env
    other = unique("svc")  # no service runs by that name: its request waits in the queue
    probe.track(f"{other}.requests", f"{other}.replies.{client.name}")
    with Client(client.name, service=other, broker=broker(), secret=SECRET) as sender:
        message_id = sender.push(trapped(tmp_path, "captured"))
    _, properties, body = probe.channel.basic_get(f"{other}.requests", auto_ack=True)
    probe.publish(f"{service.name}.requests", body, properties.headers, message_id)
    assert control_runs(client)
    records = wait_for(lambda: rejected(caplog, message_id))
    assert f"addressed to {other!r}, not to service {service.name!r}" in records[0].getMessage()
    assert not (tmp_path / "captured.ran").exists()


@pytest.mark.parametrize("skew", [-2 * 86400, +2 * 86400])
def test_a_request_sent_outside_the_replay_window_is_rejected(env, tmp_path, skew):
    import time
    from pysched_lightning.remote.messages import encode_request
    probe, service, client, caplog = env
    request = trapped(tmp_path, "stale")
    body = encode_request(request, client.name, time.time() + skew, service.name)[1]
    probe.publish(f"{service.name}.requests", body, signature(body), request.message_id)
    assert control_runs(client)
    records = wait_for(lambda: rejected(caplog, request.message_id))
    assert "outside the replay window" in records[0].getMessage()
    assert not (tmp_path / "stale.ran").exists()


def test_a_client_with_the_wrong_secret_hears_why_instead_of_timing_out(env):
    from pysched_lightning.remote import Client, RejectedMessage
    probe, service, client, caplog = env
    name = unique("client")
    probe.track(f"{service.name}.replies.{name}")
    with Client(name, service=service.name, broker=broker(),
                secret="not the service's secret, but long") as wrong:
        message_id = wrong.task(add).launch(1, 1)
        with pytest.raises(RejectedMessage, match="wrong signature") as info:
            wrong.sync_await_response(message_id, timeout=15)
        assert info.value.message_id == message_id
        with pytest.raises(RejectedMessage, match="wrong signature"):
            wrong.get_response(message_id)  # asked again: the same answer
    assert control_runs(client)


def test_a_message_id_another_client_used_is_refused_to_the_second_client(env, tmp_path):
    from pysched_lightning.remote import Client, RejectedMessage, Request
    probe, service, client, caplog = env
    shared = unique("shared-id")
    first = client.push(Request(add, (1, 1), message_id=shared))
    assert client.sync_await_response(first, timeout=15).result == 2
    name = unique("client")
    probe.track(f"{service.name}.replies.{name}")
    with Client(name, service=service.name, broker=broker(), secret=SECRET) as second:
        second.push(Request(touch, (str(tmp_path / "second.ran"),), message_id=shared))
        with pytest.raises(RejectedMessage, match="used before by another client"):
            second.sync_await_response(shared, timeout=15)
    assert not (tmp_path / "second.ran").exists()


def test_running_without_a_secret_is_logged_as_a_warning(tmp_path, caplog):
    from pysched_lightning.remote import Client, Service
    caplog.set_level(logging.WARNING, logger="pysched_lightning.remote")
    Service("svc", "amqp://localhost", f"sqlite:///{tmp_path}/s.db", insecure=True)
    assert "service 'svc' runs without a secret (insecure)" in caplog.text
    with pytest.raises(ConnectionError):  # the warning comes before it connects
        Client("c", broker="amqp://guest:guest@127.0.0.1:1/%2F", insecure=True)
    assert "client 'c' runs without a secret (insecure)" in caplog.text
