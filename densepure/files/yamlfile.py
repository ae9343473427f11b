"""Reading YAML the project's way: a key given twice in one mapping is a mistake, never "the last one wins"."""

from __future__ import annotations

from pathlib import Path

import yaml


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A mapping that names one key twice."""


class StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses duplicate keys, naming the key and its line."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                if key in seen:
                    raise DuplicateKeyError(None, None, f"key {key!r} appears twice (lines {seen[key] + 1} and "
                                                        f"{key_node.start_mark.line + 1})", key_node.start_mark)
                seen[key] = key_node.start_mark.line
            except TypeError:  # an unhashable key: SafeLoader's own error follows
                pass
        return super().construct_mapping(node, deep=deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, StrictLoader.construct_mapping)


def load_yaml_text(text: str):
    """The YAML document ``text`` (``yaml.safe_load`` with duplicate keys refused)."""
    return yaml.load(text, Loader=StrictLoader)


def read_yaml(path: str | Path, what: str = "YAML file"):
    """The YAML file ``path``; ValueError in one line naming the file for an unreadable file, a syntax error or a
    duplicate key."""
    path = Path(path)
    try:
        return load_yaml_text(path.read_text())
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: cannot read {what} ({' '.join(str(err).split())})") from None
    except DuplicateKeyError as err:
        raise ValueError(f"{path}: {err.problem}") from None
    except yaml.MarkedYAMLError as err:
        where = f" (line {err.problem_mark.line + 1})" if err.problem_mark else ""
        raise ValueError(f"{path}: not a valid {what}: {err.problem or err.context}{where}") from None
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not a valid {what}: {' '.join(str(err).split())}") from None
