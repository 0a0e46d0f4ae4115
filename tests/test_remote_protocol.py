"""The remote wire format: signing, the order of the checks, limits, and the
request and response encodings. No broker needed."""
from __future__ import annotations

import datetime as dt
import pathlib
import pickle
import struct
import threading

import pytest

from pysched_lightning.remote import RemoteError, Request, Response
from pysched_lightning.remote.messages import (decode_response, encode_request,
                                               encode_response, parse_task)
from pysched_lightning.remote.protocol import (PROTOCOL_VERSION, RejectedMessage, frame,
                                               make_key, sign, signature_of, verify)
from test_remote_support import TouchOnUnpickle, add, touch

KEY = make_key("k" * 32, False)
LIMIT = 64 * 1024


def signed_task(request: Request, key: bytes = KEY, client: str = "c1", sent: float = 1e9):
    message_id, body = encode_request(request, client, sent, "svc")
    return message_id, body, sign(key, body)


def booby_trapped(tmp_path: pathlib.Path) -> Request:
    """A request whose unpickling creates 'unpickled' and whose run creates 'ran'."""
    return Request(touch, (str(tmp_path / "ran"), TouchOnUnpickle(str(tmp_path / "unpickled"))))


def assert_untouched(tmp_path: pathlib.Path) -> None:
    assert not (tmp_path / "unpickled").exists()
    assert not (tmp_path / "ran").exists()


# ------------------------------------------------------------------ the secret


def test_a_secret_is_required_unless_insecure_is_explicit():
    with pytest.raises(ValueError, match="insecure=True"):
        make_key(None, False)
    assert make_key(None, True) is None
    assert make_key("a" * 16, False) == make_key(b"a" * 16, False) == b"a" * 16
    with pytest.raises(ValueError, match="empty"):
        make_key("", False)
    with pytest.raises(TypeError, match="int"):
        make_key(123, False)
    with pytest.raises(TypeError, match="'yes'"):
        make_key("a" * 16, "yes")


@pytest.mark.parametrize("secret", ["x", b"y" * 15, "\u00e9" * 7])
def test_a_secret_shorter_than_16_bytes_is_refused_without_showing_it(secret):
    with pytest.raises(ValueError, match="at least 16 bytes, got") as info:
        make_key(secret, False)
    shown = secret if isinstance(secret, str) else secret.decode()
    assert repr(shown) not in str(info.value)


# ------------------------------------------------------------------ requests


def test_a_request_round_trips_through_signing_and_parsing():
    request = Request(add, (1,), {"b": 2}, delay=5, priority=3, hard=True, lifetime=7.5,
                      enable_overdue=False, message_id="m-1")
    message_id, body, signature = signed_task(request, sent=1000.0)
    header, payload = verify(body, signature, KEY, LIMIT, "task")
    task = parse_task(header)
    assert message_id == task.message_id == "m-1"
    assert (task.client, task.sent, task.delay, task.priority, task.hard, task.lifetime,
            task.enable_overdue) == ("c1", 1000.0, 5, 3, True, 7.5, False)
    assert task.due == 1005.0
    fn, args, kwargs = pickle.loads(payload)
    assert fn(*args, **kwargs) == 3


def test_message_ids_are_made_unique_when_not_given():
    ids = {encode_request(Request(add, (1, 2)), "c", 0.0, "svc")[0] for _ in range(100)}
    assert len(ids) == 100


@pytest.mark.parametrize("kwargs, error, fragment", [
    ({"fn": 42}, TypeError, "42"),
    ({"args": "ab"}, TypeError, "'ab'"),
    ({"kwargs": {1: 2}}, TypeError, "{1: 2}"),
    ({"delay": -1}, ValueError, "-1"),
    ({"delay": float("nan")}, TypeError, "nan"),
    ({"lifetime": 0}, ValueError, "0"),
    ({"priority": True}, TypeError, "True"),
    ({"hard": 1}, TypeError, "1"),
    ({"enable_overdue": None}, TypeError, "None"),
    ({"message_id": "has space"}, ValueError, "'has space'"),
])
def test_a_bad_request_is_refused_naming_the_value(kwargs, error, fragment):
    fields = {"fn": add, **kwargs}
    with pytest.raises(error, match=fragment.replace("(", r"\(").replace("{", r"\{")):
        Request(**fields)


def test_an_unpicklable_argument_is_named_before_anything_is_sent():
    with pytest.raises(TypeError, match=r"args\[1\] cannot be pickled"):
        encode_request(Request(add, (1, threading.Lock())), "c", 0.0, "svc")
    with pytest.raises(TypeError, match=r"kwargs\['b'\] cannot be pickled"):
        encode_request(Request(add, (1,), {"b": threading.Lock()}), "c", 0.0, "svc")


# ------------------------------------------------------------------ checks, in order


def test_size_is_checked_before_the_signature(tmp_path):
    _, body, _ = signed_task(booby_trapped(tmp_path))
    with pytest.raises(RejectedMessage, match="too large") as info:
        verify(body + b"x" * LIMIT, None, KEY, LIMIT, "task", "claimed-id")
    assert info.value.message_id == "claimed-id"
    assert_untouched(tmp_path)


def test_unsigned_and_wrongly_signed_bodies_are_rejected(tmp_path):
    _, body, signature = signed_task(booby_trapped(tmp_path))
    with pytest.raises(RejectedMessage, match="unsigned"):
        verify(body, None, KEY, LIMIT, "task")
    with pytest.raises(RejectedMessage, match="wrong signature"):
        verify(body, sign(b"another key", body), KEY, LIMIT, "task")
    with pytest.raises(RejectedMessage, match="wrong signature"):
        verify(body[:-1] + bytes([body[-1] ^ 1]), signature, KEY, LIMIT, "task")  # tampered
    with pytest.raises(RejectedMessage, match="wrong signature"):
        verify(body, "not hex at all \u00e9", KEY, LIMIT, "task")
    assert_untouched(tmp_path)


@pytest.mark.parametrize("body, reason", [
    (b"hello", "too short"),
    (b"GARBAGE-GARBAGE", "not a pysched message"),
    (b"PSL\x02\x00\x00\x10\x00{}", "past the end"),
    (b"PSL\x02\x00\x00\x00\x03{x}", "not JSON"),
    (b"PSL\x02\x00\x00\x00\x02[]", "not a JSON object"),
])
def test_a_signed_body_that_is_not_a_message_is_malformed(body, reason):
    with pytest.raises(RejectedMessage, match=reason):
        verify(body, sign(KEY, body), KEY, LIMIT, "task")


def test_an_unknown_protocol_version_is_rejected(tmp_path):
    _, body, _ = signed_task(booby_trapped(tmp_path))
    future = body[:3] + struct.pack(">B", PROTOCOL_VERSION + 1) + body[4:]
    with pytest.raises(RejectedMessage, match=f"unknown protocol version {PROTOCOL_VERSION + 1}"):
        verify(future, sign(KEY, future), KEY, LIMIT, "task")
    assert_untouched(tmp_path)


@pytest.mark.parametrize("field, value", [
    ("id", None), ("client", ""), ("sent", "yesterday"), ("delay", -5), ("priority", "high"),
    ("hard", "yes"), ("lifetime", 0), ("overdue", 1),
])
def test_a_signed_task_with_a_bad_field_is_malformed_naming_it(field, value):
    header = {"kind": "task", "id": "m", "client": "c", "sent": 1.0, "delay": None,
              "priority": 1, "hard": False, "lifetime": None, "overdue": True, field: value}
    body = frame(header, b"")
    with pytest.raises(RejectedMessage, match="malformed"):
        parse_task(verify(body, sign(KEY, body), KEY, LIMIT, "task")[0])


def test_a_response_cannot_be_replayed_as_a_task():
    body = encode_response("m", "completed", 1, max_size=LIMIT)
    with pytest.raises(RejectedMessage, match="kind 'response'"):
        verify(body, sign(KEY, body), KEY, LIMIT, "task")


def test_without_a_key_signatures_are_not_checked():
    _, body, _ = signed_task(Request(add, (1, 2)))
    assert verify(body, None, None, LIMIT, "task")[0]["kind"] == "task"
    assert verify(body, "whatever", None, LIMIT, "task")[0]["kind"] == "task"


def test_the_signature_travels_in_an_amqp_header():
    assert signature_of({"x-psl-signature": "ab12"}) == "ab12"
    assert signature_of({"x-psl-signature": b"ab12"}) == "ab12"
    assert signature_of({"x-psl-signature": 5}) is None
    assert signature_of(None) is None


# ------------------------------------------------------------------ responses


def test_a_response_round_trips_with_aware_times():
    body = encode_response("m", "completed", {"x": [1, 2]}, started=1e9, finished=1e9 + 1.5,
                           max_size=LIMIT)
    response = decode_response(body, sign(KEY, body), KEY, LIMIT)
    assert response == Response("m", "completed", {"x": [1, 2]}, None, None,
                                dt.datetime(2001, 9, 9, 1, 46, 40, tzinfo=dt.timezone.utc),
                                dt.datetime(2001, 9, 9, 1, 46, 41, 500000,
                                            tzinfo=dt.timezone.utc))


def test_a_remote_exception_comes_back_as_itself_with_its_traceback_text():
    body = encode_response("m", "error", exception=KeyError("k"), traceback="Traceback ...",
                           max_size=LIMIT)
    response = decode_response(body, sign(KEY, body), KEY, LIMIT)
    assert isinstance(response.exception, KeyError) and response.traceback == "Traceback ..."


class Unpicklable(Exception):
    def __init__(self) -> None:
        super().__init__("cannot travel")
        self.lock = threading.Lock()


def test_what_cannot_be_pickled_is_replaced_by_a_remote_error():
    body = encode_response("m", "completed", threading.Lock(), max_size=LIMIT)
    response = decode_response(body, sign(KEY, body), KEY, LIMIT)
    assert response.status == "error" and isinstance(response.exception, RemoteError)
    body = encode_response("m", "error", exception=Unpicklable(), max_size=LIMIT)
    response = decode_response(body, sign(KEY, body), KEY, LIMIT)
    assert isinstance(response.exception, RemoteError)
    assert "Unpicklable: cannot travel" in str(response.exception)


def test_a_response_over_the_limit_becomes_an_error_that_fits():
    body = encode_response("m", "completed", b"x" * 5000, max_size=4096)
    assert len(body) <= 4096
    response = decode_response(body, sign(KEY, body), KEY, 4096)
    assert response.status == "error" and "over the limit of 4096" in str(response.exception)


def test_a_response_is_checked_before_it_is_unpickled(tmp_path):
    body = frame({"kind": "response", "id": "m", "status": "completed", "started": None,
                  "finished": None, "traceback": None},
                 pickle.dumps((TouchOnUnpickle(str(tmp_path / "unpickled")), None)))
    with pytest.raises(RejectedMessage, match="wrong signature"):
        decode_response(body, sign(b"forged", body), KEY, LIMIT)
    assert not (tmp_path / "unpickled").exists()
    decode_response(body, sign(KEY, body), KEY, LIMIT)  # the control: a good one is unpickled
    assert (tmp_path / "unpickled").exists()


def test_a_response_that_cannot_be_unpickled_here_says_so():
    body = frame({"kind": "response", "id": "m", "status": "completed", "started": None,
                  "finished": None, "traceback": None}, b"not a pickle")
    response = decode_response(body, sign(KEY, body), KEY, LIMIT)
    assert response.status == "completed" and isinstance(response.exception, RemoteError)


def test_an_unknown_status_is_refused():
    with pytest.raises(ValueError, match="'fine'"):
        encode_response("m", "fine")
