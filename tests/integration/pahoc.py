"""Paho C 1.3's synchronous client library (``libpaho-mqtt3c``) through ctypes, and a driver
program made of it for the client tests.

Debian's ``paho.mqtt.c-examples`` programs cannot ask for everything the tests need (clean
session 0, MQTT 5's session expiry, a will), and compiling a C program would need a compiler
and headers at test time, so the tests call the library itself: the structures below are the
ones of ``MQTTClient.h``/``MQTTProperties.h`` of Paho C 1.3 (the fields up to the last one
used; the library only reads the rest).

``python -m tests.integration.pahoc`` is the driver (tests/integration/test_clients_pahoc.py):
it reads one JSON command a line on stdin and prints one JSON line a reply or event, the
protocol of :mod:`tests.integration.clientprocs` (which MQTT.js's driver speaks too). The
client runs in the library's asynchronous mode (callbacks set), so a message is printed as
soon as the library's thread has it; each command is a blocking library call.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import sys
import threading
from typing import Any

LIBPAHO = "libpaho-mqtt3c.so.1"  # libpaho-mqtt1.3: the synchronous client, no TLS
INSTALL_HINT = "run `make paho-c` (`make test` installs it: Debian's paho.mqtt.c-examples)"

PERSISTENCE_NONE = 1  # MQTTClientPersistence.h
MQTT_3_1_1 = 4  # MQTTVERSION_3_1_1
MQTT_5 = 5  # MQTTVERSION_5
DISCONNECTED = -3  # MQTTCLIENT_DISCONNECTED
SESSION_EXPIRY_INTERVAL = 17  # MQTTPROPERTY_CODE_SESSION_EXPIRY_INTERVAL
COMMAND_TIMEOUT_MS = 5000  # the longest a connect, publish or disconnect may take


def installed() -> bool:
    return ctypes.util.find_library("paho-mqtt3c") is not None


class Returned(ctypes.Structure):
    _fields_ = [("serverURI", ctypes.c_char_p), ("MQTTVersion", ctypes.c_int),
                ("sessionPresent", ctypes.c_int)]


class BinaryPassword(ctypes.Structure):
    _fields_ = [("len", ctypes.c_int), ("data", ctypes.c_void_p)]


class ConnectOptions(ctypes.Structure):
    """MQTTClient_connectOptions, struct_version 8."""

    _fields_ = [("struct_id", ctypes.c_char * 4), ("struct_version", ctypes.c_int),
                ("keepAliveInterval", ctypes.c_int), ("cleansession", ctypes.c_int),
                ("reliable", ctypes.c_int), ("will", ctypes.c_void_p),
                ("username", ctypes.c_char_p), ("password", ctypes.c_char_p),
                ("connectTimeout", ctypes.c_int), ("retryInterval", ctypes.c_int),
                ("ssl", ctypes.c_void_p), ("serverURIcount", ctypes.c_int),
                ("serverURIs", ctypes.c_void_p), ("MQTTVersion", ctypes.c_int),
                ("returned", Returned), ("binarypwd", BinaryPassword),
                ("maxInflightMessages", ctypes.c_int), ("cleanstart", ctypes.c_int),
                ("httpHeaders", ctypes.c_void_p), ("httpProxy", ctypes.c_char_p),
                ("httpsProxy", ctypes.c_char_p)]


class Message(ctypes.Structure):
    """The leading fields of MQTTClient_message (the rest is only read by the library)."""

    _fields_ = [("struct_id", ctypes.c_char * 4), ("struct_version", ctypes.c_int),
                ("payloadlen", ctypes.c_int), ("payload", ctypes.c_void_p),
                ("qos", ctypes.c_int), ("retained", ctypes.c_int), ("dup", ctypes.c_int),
                ("msgid", ctypes.c_int)]


class WillPayload(ctypes.Structure):
    _fields_ = [("len", ctypes.c_int), ("data", ctypes.c_void_p)]


class WillOptions(ctypes.Structure):
    """MQTTClient_willOptions, struct_version 1."""

    _fields_ = [("struct_id", ctypes.c_char * 4), ("struct_version", ctypes.c_int),
                ("topicName", ctypes.c_char_p), ("message", ctypes.c_char_p),
                ("retained", ctypes.c_int), ("qos", ctypes.c_int), ("payload", WillPayload)]


class CreateOptions(ctypes.Structure):
    """MQTTClient_createOptions: MQTT 5 must be chosen when the client is created."""

    _fields_ = [("struct_id", ctypes.c_char * 4), ("struct_version", ctypes.c_int),
                ("MQTTVersion", ctypes.c_int)]


class LenString(ctypes.Structure):
    _fields_ = [("len", ctypes.c_int), ("data", ctypes.c_char_p)]


class StringPair(ctypes.Structure):
    _fields_ = [("data", LenString), ("value", LenString)]


class PropertyValue(ctypes.Union):
    _fields_ = [("byte", ctypes.c_ubyte), ("integer2", ctypes.c_ushort),
                ("integer4", ctypes.c_uint), ("strings", StringPair)]


class Property(ctypes.Structure):
    """MQTTProperty: an identifier and a union of the value types."""

    _fields_ = [("identifier", ctypes.c_int), ("value", PropertyValue)]


class Properties(ctypes.Structure):
    """MQTTProperties (the array is allocated and freed by the library)."""

    _fields_ = [("count", ctypes.c_int), ("max_count", ctypes.c_int),
                ("length", ctypes.c_int), ("array", ctypes.c_void_p)]


class Response(ctypes.Structure):
    """MQTTResponse, returned by value by the MQTT 5 calls."""

    _fields_ = [("version", ctypes.c_int), ("reasonCode", ctypes.c_int),
                ("reasonCodeCount", ctypes.c_int), ("reasonCodes", ctypes.c_void_p),
                ("properties", ctypes.c_void_p)]


ConnectionLost = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)
MessageArrived = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int,
                                  ctypes.POINTER(Message))


def load() -> ctypes.CDLL:
    """The library with the signatures of every function the tests call."""
    lib = ctypes.CDLL(LIBPAHO)
    handle, p_handle = ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p)
    sigs: dict[str, tuple[list[Any], Any]] = {
        "MQTTClient_create": ([p_handle, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int,
                               ctypes.c_void_p], ctypes.c_int),
        "MQTTClient_createWithOptions": ([p_handle, ctypes.c_char_p, ctypes.c_char_p,
                                          ctypes.c_int, ctypes.c_void_p,
                                          ctypes.POINTER(CreateOptions)], ctypes.c_int),
        "MQTTClient_setCallbacks": ([handle, ctypes.c_void_p, ConnectionLost, MessageArrived,
                                     ctypes.c_void_p], ctypes.c_int),
        "MQTTClient_connect": ([handle, ctypes.POINTER(ConnectOptions)], ctypes.c_int),
        "MQTTClient_connect5": ([handle, ctypes.POINTER(ConnectOptions),
                                 ctypes.POINTER(Properties), ctypes.POINTER(Properties)],
                                Response),
        "MQTTClient_subscribe": ([handle, ctypes.c_char_p, ctypes.c_int], ctypes.c_int),
        "MQTTClient_subscribe5": ([handle, ctypes.c_char_p, ctypes.c_int, ctypes.c_void_p,
                                   ctypes.c_void_p], Response),
        "MQTTClient_publish": ([handle, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                                ctypes.c_int, ctypes.c_int, ctypes.POINTER(ctypes.c_int)],
                               ctypes.c_int),
        "MQTTClient_publish5": ([handle, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                                 ctypes.c_int, ctypes.c_int, ctypes.c_void_p,
                                 ctypes.POINTER(ctypes.c_int)], Response),
        "MQTTClient_waitForCompletion": ([handle, ctypes.c_int, ctypes.c_ulong], ctypes.c_int),
        "MQTTClient_receive": ([handle, ctypes.POINTER(ctypes.c_void_p),
                                ctypes.POINTER(ctypes.c_int),
                                ctypes.POINTER(ctypes.POINTER(Message)), ctypes.c_ulong],
                               ctypes.c_int),
        "MQTTClient_freeMessage": ([ctypes.POINTER(ctypes.POINTER(Message))], None),
        "MQTTClient_free": ([ctypes.c_void_p], None),
        "MQTTClient_disconnect": ([handle, ctypes.c_int], ctypes.c_int),
        "MQTTClient_disconnect5": ([handle, ctypes.c_int, ctypes.c_int, ctypes.c_void_p],
                                   ctypes.c_int),
        "MQTTClient_destroy": ([p_handle], None),
        "MQTTProperties_add": ([ctypes.POINTER(Properties), ctypes.POINTER(Property)],
                               ctypes.c_int),
        "MQTTProperties_free": ([ctypes.POINTER(Properties)], None),
        "MQTTResponse_free": ([Response], None),
    }
    for name, (argtypes, restype) in sigs.items():
        fn = getattr(lib, name)
        fn.argtypes = argtypes
        fn.restype = restype
    return lib


# -- the driver ------------------------------------------------------------------------------------

class Driver:
    """One Paho C client at a time, run by JSON commands (see :mod:`.clientprocs`)."""

    def __init__(self) -> None:
        self.lib = load()
        self.client = ctypes.c_void_p()
        self.version = MQTT_3_1_1
        self._print = threading.Lock()
        # the callbacks must outlive every call that may invoke them
        self._lost = ConnectionLost(self._on_lost)
        self._arrived = MessageArrived(self._on_message)

    def say(self, obj: dict[str, Any]) -> None:
        with self._print:
            print(json.dumps(obj), flush=True)

    # callbacks (the library's thread)
    def _on_lost(self, context: Any, cause: Any) -> None:
        self.say({"event": "close"})

    def _on_message(self, context: Any, topic: int, topic_len: int,
                    msg: Any) -> int:
        m = msg.contents
        name = ctypes.string_at(topic, topic_len) if topic_len else ctypes.string_at(topic)
        self.say({"event": "message", "topic": name.decode(),
                  "payload": ctypes.string_at(m.payload, m.payloadlen).decode(),
                  "qos": m.qos, "retain": bool(m.retained)})
        self.lib.MQTTClient_freeMessage(ctypes.byref(msg))
        self.lib.MQTTClient_free(topic)
        return 1  # handled

    # commands
    def connect(self, url: str, clientId: str, version: int, clean: bool = True,
                sessionExpiry: int | None = None, will: dict[str, Any] | None = None,
                keepalive: int = 60) -> dict[str, Any]:
        lib = self.lib
        self.version = version
        create = CreateOptions(struct_id=b"MQCO", struct_version=0, MQTTVersion=version)
        rc = lib.MQTTClient_createWithOptions(ctypes.byref(self.client), url.encode(),
                                              clientId.encode(), PERSISTENCE_NONE, None,
                                              ctypes.byref(create))
        if rc != 0:
            raise RuntimeError(f"MQTTClient_createWithOptions: {rc}")
        rc = lib.MQTTClient_setCallbacks(self.client, None, self._lost, self._arrived, None)
        if rc != 0:
            raise RuntimeError(f"MQTTClient_setCallbacks: {rc}")
        opts = ConnectOptions(struct_id=b"MQTC", struct_version=8, keepAliveInterval=keepalive,
                              reliable=1, connectTimeout=COMMAND_TIMEOUT_MS // 1000,
                              MQTTVersion=version, maxInflightMessages=-1)
        if will is not None:
            w = WillOptions(struct_id=b"MQTW", struct_version=1,
                            topicName=will["topic"].encode(),
                            message=will["payload"].encode(), retained=int(will["retain"]),
                            qos=will["qos"])
            opts.will = ctypes.cast(ctypes.pointer(w), ctypes.c_void_p)
        if version == MQTT_5:
            opts.cleanstart = int(clean)
            props = Properties()
            if sessionExpiry is not None:
                prop = Property(identifier=SESSION_EXPIRY_INTERVAL,
                                value=PropertyValue(integer4=sessionExpiry))
                if lib.MQTTProperties_add(ctypes.byref(props), ctypes.byref(prop)) != 0:
                    raise RuntimeError("MQTTProperties_add failed")
            resp = lib.MQTTClient_connect5(self.client, ctypes.byref(opts),
                                           ctypes.byref(props), None)
            lib.MQTTProperties_free(ctypes.byref(props))
            code = resp.reasonCode
            lib.MQTTResponse_free(resp)
        else:
            opts.cleansession = int(clean)
            code = lib.MQTTClient_connect(self.client, ctypes.byref(opts))
        if code != 0:
            raise RuntimeError(f"connect refused or failed: {code}")
        # Paho C 1.3 reads the session present flag of a 3.1.1 CONNACK only (``returned`` is
        # filled from it when the MQTT version is 4): at 5.0 the client cannot tell
        present = bool(opts.returned.sessionPresent) if version == MQTT_3_1_1 else None
        return {"sessionPresent": present}

    def subscribe(self, topic: str, qos: int) -> dict[str, Any]:
        if self.version == MQTT_5:
            resp = self.lib.MQTTClient_subscribe5(self.client, topic.encode(), qos, None, None)
            granted = resp.reasonCode  # the granted QoS, or a failure code >= 0x80
            self.lib.MQTTResponse_free(resp)
        else:
            rc = self.lib.MQTTClient_subscribe(self.client, topic.encode(), qos)
            # MQTTCLIENT_SUCCESS when the broker granted what was asked, else what it granted
            # (0x80: refused); a negative value is a failure of the library
            if rc < 0:
                raise RuntimeError(f"MQTTClient_subscribe: {rc}")
            granted = qos if rc == 0 else rc
        return {"granted": granted}

    def publish(self, topic: str, payload: str, qos: int = 0,
                retain: bool = False) -> dict[str, Any]:
        """Publish and, at QoS 1 and 2, wait until its flow is complete (PUBACK/PUBCOMP)."""
        data = payload.encode()
        token = ctypes.c_int()
        if self.version == MQTT_5:
            resp = self.lib.MQTTClient_publish5(self.client, topic.encode(), len(data), data,
                                                qos, int(retain), None, ctypes.byref(token))
            rc = resp.reasonCode
            self.lib.MQTTResponse_free(resp)
        else:
            rc = self.lib.MQTTClient_publish(self.client, topic.encode(), len(data), data, qos,
                                             int(retain), ctypes.byref(token))
        if rc != 0:
            raise RuntimeError(f"publish: {rc}")
        if qos:
            rc = self.lib.MQTTClient_waitForCompletion(self.client, token, COMMAND_TIMEOUT_MS)
            if rc != 0:
                raise RuntimeError(f"MQTTClient_waitForCompletion: {rc}")
        return {}

    def disconnect(self) -> dict[str, Any]:
        if self.version == MQTT_5:
            rc = self.lib.MQTTClient_disconnect5(self.client, 1000, 0, None)
        else:
            rc = self.lib.MQTTClient_disconnect(self.client, 1000)
        self.lib.MQTTClient_destroy(ctypes.byref(self.client))
        if rc != 0:
            raise RuntimeError(f"disconnect: {rc}")
        return {}


def main() -> int:
    driver = Driver()
    driver.say({"event": "ready"})
    for line in sys.stdin:
        command: dict[str, Any] = json.loads(line)
        name = command.pop("cmd")
        if name == "exit":
            return 0
        try:
            result = getattr(driver, name)(**command)
        except Exception as exc:  # noqa: BLE001 - reported to the test, which fails on it
            driver.say({"reply": name, "ok": False, "error": str(exc)})
        else:
            driver.say({"reply": name, "ok": True, **result})
    return 0


if __name__ == "__main__":
    sys.exit(main())
