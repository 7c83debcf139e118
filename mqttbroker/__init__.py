"""mqttbroker: an MQTT 3.1, 3.1.1 and 5.0 broker for fleets of small sensors and mobile devices."""

__version__ = "0.1.0"
