"""``google.colab.userdata``: Colab Secrets, read from the JSON file named by ``FAKE_COLAB_SECRETS``."""

import json
import os
from pathlib import Path


class SecretNotFoundError(Exception):
    pass


def get(key):
    """The secret's value; raises SecretNotFoundError like Colab when there is none."""
    path = os.environ.get("FAKE_COLAB_SECRETS")
    secrets = json.loads(Path(path).read_text()) if path else {}
    if key not in secrets:
        raise SecretNotFoundError(f"Secret {key} does not exist.")
    return secrets[key]
