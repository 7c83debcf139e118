"""paho-mqtt's ``Client`` with one fix exactly once depends on.

paho-mqtt 2.2.0's ``reconnect()`` resets the state of what is in flight *before* it opens the
socket, and does it again on every attempt. A QoS 2 message whose PUBREL was sent (waiting
for PUBCOMP) becomes "resend the PUBREL" at the first attempt, which is right; but when that
attempt fails (the broker is still down) the next reset turns it into "resend the PUBLISH",
with DUP clear. The broker released the packet identifier when it took the PUBREL, so to it
that PUBLISH is a new message [MQTT-4.3.3-12]: it is delivered twice. The sender "MUST NOT
re-send the PUBLISH once it has sent the corresponding PUBREL packet" [MQTT-4.3.3-6] (MQTT
3.1.1 section 4.3.3 says the same). A broker cannot tell such a resend from a new message:
the fix has to be in the client. Here a message waiting to resend its PUBREL keeps waiting
to resend its PUBREL, however many attempts fail (tests/integration/test_paho_client.py).
"""

from __future__ import annotations

import paho.mqtt.client as mqtt


class Client(mqtt.Client):
    """``paho.mqtt.client.Client``, but a reconnect attempt that fails never turns a PUBREL
    owed to the broker back into a PUBLISH (see the module docstring)."""

    def _messages_reconnect_reset_out(self) -> None:
        with self._out_message_mutex:  # (an RLock: the reset takes it too)
            releasing = [m for m in self._out_messages.values()
                         if m.qos == 2 and m.state == mqtt.mqtt_ms_resend_pubrel]
            super()._messages_reconnect_reset_out()
            if not self._check_clean_session():  # (a clean session starts the flow over)
                for m in releasing:
                    m.state = mqtt.mqtt_ms_resend_pubrel
