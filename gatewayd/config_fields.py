"""The types of keys every section shares: hub keys safe in topics, and secrets.

Apart from the sections so that the gateway's own identity (config_sections.py) and each
sub-device's (config_devices.py) are held to the same rules: a key that becomes an MQTT topic
level, a secret refused when it is a placeholder, and one secret from exactly one place.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, SecretStr

from gatewayd.secrets import read_credential, read_secret_file, refuse_placeholder


def _topic_safe(key: str) -> str:
    """Keys become MQTT topic levels: a wildcard, a separator or NUL would change the topic."""
    bad = sorted({c for c in key if c in "+#/\0"})
    if bad:
        shown = ", ".join("NUL" if c == "\0" else repr(c) for c in bad)
        raise ValueError(f"must not contain {shown}: it is part of MQTT topics")
    return key


HubKey = Annotated[str, Field(min_length=1), AfterValidator(_topic_safe)]
Secret = Annotated[SecretStr | None, AfterValidator(refuse_placeholder)]
SecretFromFile = Annotated[SecretStr | None, BeforeValidator(read_secret_file)]
SecretFromCredential = Annotated[SecretStr | None, BeforeValidator(read_credential)]


class Section(BaseModel):
    """A TOML section: unknown keys are errors, not ignored typos."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def settle_device_secret(model: BaseModel, *, required: bool) -> None:
    """Keep the one secret given (`device_secret`, `_file` or `_credential`) in
    `device_secret`, and forget where it came from (a frozen model: set in its validator)."""
    fields = ("device_secret", "device_secret_file", "device_secret_credential")
    sources = tuple(getattr(model, name) for name in fields)
    secret = one_secret(sources, model.model_fields_set, "device_secret", required=required)
    for name, value in zip(fields, (secret, None, None), strict=True):
        object.__setattr__(model, name, value)


def one_secret(
    sources: tuple[SecretStr | None, ...], given: set[str], what: str, *, required: bool
) -> SecretStr | None:
    """`device_secret`, `_file` or `_credential` (each already read and checked): at most one."""
    keys = [f"{what}{suffix}" for suffix in ("", "_file", "_credential")]
    named = [key for key in keys if key in given]
    if len(named) > 1:
        raise ValueError(f"set one of {', '.join(named)}, not several")
    secret = next((s for s in sources if s is not None), None)
    if required and not named:
        raise ValueError(f"{what} (or {what}_file, or {what}_credential) is required")
    if named and named[0] == what and (secret is None or not secret.get_secret_value()):
        raise ValueError(f"{what} is empty")
    return secret
