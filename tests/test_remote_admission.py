"""What the service admits: the checks of admit(), in order, and a fuzz test:
whatever it is given (any bytes, any AMQP properties), it returns a checked
request or raises RejectedMessage with a reason, never anything else.
No broker needed."""
from __future__ import annotations

import json
import struct
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pysched_lightning.remote import Request
from pysched_lightning.remote.admission import admit, reply_queue_of
from pysched_lightning.remote.messages import TaskHeader, encode_request
from pysched_lightning.remote.protocol import (PROTOCOL_VERSION, RejectedMessage, frame,
                                               make_key, sign, unframe)
from test_remote_support import add

KEY = make_key("k" * 32, False)
LIMIT = 64 * 1024
NOW = 1.7e9
SERVICE = "svc"


def properties(body=None, key=KEY, **fields):
    headers = fields.pop("headers", None)
    if headers is None and body is not None and key is not None:
        headers = {"x-psl-signature": sign(key, body)}
    return SimpleNamespace(headers=headers, message_id=fields.pop("message_id", "claimed"),
                           reply_to=fields.pop("reply_to", None), **fields)


def check(body, props=None, **options):
    arguments = {"key": KEY, "max_size": LIMIT, "service": SERVICE, "now": NOW,
                 "max_age": 3600.0, **options}
    return admit(body, properties(body) if props is None else props, **arguments)


def request_body(sent=NOW, service=SERVICE, **header):
    _, body = encode_request(Request(add, (1, 2), message_id="m-1"), "c1", sent, service)
    if header:
        old, payload = unframe(body)
        body = frame({**old, **header}, payload)
    return body


def test_a_good_request_is_admitted():
    task = check(request_body())
    assert (task.message_id, task.client, task.sent) == ("m-1", "c1", NOW)


def test_properties_pika_could_not_decode_are_rejected_first():
    props = properties(request_body())
    props._psl_undecodable = "undecodable AMQP properties (OverflowError: ...)"
    with pytest.raises(RejectedMessage, match="undecodable AMQP properties") as info:
        check(request_body(), props)
    assert info.value.message_id == "claimed"


def test_a_request_for_another_service_is_rejected():
    with pytest.raises(RejectedMessage, match="addressed to 'other', not to service 'svc'"):
        check(request_body(service="other"))
    body = frame({k: v for k, v in unframe(request_body())[0].items() if k != "service"}, b"")
    with pytest.raises(RejectedMessage, match="addressed to no service"):
        check(body)


@pytest.mark.parametrize("sent", [NOW - 3601, NOW + 3601])
def test_a_request_sent_outside_the_replay_window_is_rejected(sent):
    with pytest.raises(RejectedMessage, match="outside the replay window"):
        check(request_body(sent=sent))
    assert check(request_body(sent=sent), max_age=None).sent == sent  # no window: admitted


def test_a_version_1_request_is_rejected_naming_the_versions():
    body = request_body()
    old = body[:3] + struct.pack(">B", 1) + body[4:]
    with pytest.raises(RejectedMessage, match=r"unknown protocol version 1 \(this side speaks "
                                              f"{PROTOCOL_VERSION}\\)"):
        check(old)


def test_checks_that_raise_oddly_are_rejections():
    header = unframe(request_body())[0]
    head = json.dumps(header)[:-1].encode() + b', "deep": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    deep = b"PSL" + struct.pack(">BI", PROTOCOL_VERSION, len(head)) + head
    with pytest.raises(RejectedMessage, match="nested too deeply"):
        check(deep)
    with pytest.raises(RejectedMessage, match="sent must be a finite number"):
        check(request_body(sent=10**400))
    with pytest.raises(RejectedMessage, match="priority must be an int"):
        check(request_body(priority=[1] * 1000))


def test_a_rejection_notice_goes_only_to_a_reply_queue_of_this_service():
    assert reply_queue_of(properties(reply_to="svc.replies.c1"), "svc") == "svc.replies.c1"
    for queue in ("svc.requests", "other.replies.c1", "svc.replies.", "svc.replies.a b", 5,
                  None):
        assert reply_queue_of(properties(reply_to=queue), "svc") is None


# ------------------------------------------------------------------ fuzz

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12)
_header_value = (_json | st.binary(max_size=20) | st.datetimes()
                 | st.decimals(allow_nan=False, allow_infinity=False))
_FIELDS = ("kind", "id", "client", "service", "sent", "delay", "priority", "hard", "lifetime",
           "overdue")


@st.composite
def bodies(draw):
    """Any bytes; a frame around any JSON; or a good request with fields changed."""
    choice = draw(st.integers(0, 3))
    if choice == 0:
        return draw(st.binary(max_size=300))
    if choice == 1:
        head = draw(st.binary(max_size=200))
        version = draw(st.sampled_from([PROTOCOL_VERSION, 1, 0, 255]))
        length = draw(st.sampled_from([len(head), len(head) + 1, 2**32 - 1, 0]))
        return b"PSL" + struct.pack(">BI", version, length) + head + draw(st.binary(max_size=20))
    header = unframe(request_body())[0]
    for field in draw(st.lists(st.sampled_from(_FIELDS), max_size=4)):
        if draw(st.booleans()):
            header[field] = draw(_json)
        else:
            header.pop(field, None)
    if choice == 3:
        header["sent"] = NOW + draw(st.floats(-1e4, 1e4))
    return frame(header, draw(st.binary(max_size=50)))


@st.composite
def amqp_properties(draw, body):
    signed = draw(st.booleans())
    headers = draw(st.none() | st.dictionaries(st.text(max_size=15), _header_value, max_size=3))
    if signed:
        headers = {**(headers or {}), "x-psl-signature": sign(KEY, body)}
    elif draw(st.booleans()):
        headers = {**(headers or {}), "x-psl-signature": draw(_header_value)}
    props = SimpleNamespace(headers=headers,
                            message_id=draw(st.none() | st.text(max_size=300) | st.binary()),
                            reply_to=draw(st.none() | st.text(max_size=30)))
    if draw(st.integers(0, 9)) == 0:
        props._psl_undecodable = "undecodable AMQP properties (fuzzed)"
    return props


# Bounded and reproducible (the same examples every run, no example database
# written): a few seconds in CI.
@settings(max_examples=400, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzz_any_input_is_admitted_or_rejected_with_a_reason(data):
    body = data.draw(bodies())
    props = data.draw(amqp_properties(body))
    key = data.draw(st.sampled_from([KEY, None]))
    try:
        task = admit(body, props, key=key, max_size=data.draw(st.sampled_from([LIMIT, 1024])),
                     service=SERVICE, now=NOW, max_age=3600.0)
    except RejectedMessage as exc:
        assert exc.reason and isinstance(exc.reason, str)
        assert exc.message_id is None or (isinstance(exc.message_id, str)
                                          and len(exc.message_id) <= 80)
        return
    assert isinstance(task, TaskHeader) and task.message_id and task.client
    assert abs(task.sent - NOW) <= 3600.0

