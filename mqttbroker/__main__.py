"""``python -m mqttbroker``: the same command line as the ``mqttbroker`` console script."""

from mqttbroker.cli import main

if __name__ == "__main__":
    main()
