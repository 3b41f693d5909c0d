"""A small kustomize renderer for the subset deploy/k8s uses, so the manifests can be rendered
and validated where no kustomize binary exists (tests compare it with ``kubectl kustomize`` where
one does).

Supported ``kustomization.yaml`` fields (anything else is an error, so the subset cannot drift):
``resources`` (files or directories holding a kustomization), ``namespace``, ``labels`` (with
``includeSelectors: false`` and ``includeTemplates: false`` only: metadata labels), ``images``
(``name``/``newName``/``newTag`` on containers) and ``patches`` with ``path`` to a
strategic-merge patch, matched to a resource by kind and name. Strategic merge: maps merge
recursively, ``null`` deletes a key, lists of containers/volumes/env/ports/volumeMounts merge
by their Kubernetes merge keys, every other list is replaced (as for fields without a patch
merge key, e.g. HPA ``metrics`` and ``tolerations``).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

__all__ = ["KustomizeError", "render"]

_KNOWN_FIELDS = {"apiVersion", "kind", "resources", "namespace", "labels", "images", "patches"}
# list field name -> merge key (Kubernetes patchMergeKey for the fields deploy/k8s patches)
_MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "volumes": "name",
    "env": "name",
    "ports": "containerPort",
    "volumeMounts": "mountPath",
}
_CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume"}
_POD_SPEC_PATHS = {
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "Pod": ("spec",),
}


class KustomizeError(ValueError):
    """The kustomization uses something this renderer does not support, or is inconsistent."""


def _key(doc: dict[str, Any]) -> tuple[str, str]:
    return doc["kind"], doc["metadata"]["name"]


def strategic_merge(base: Any, patch: Any, field: str = "") -> Any:
    """Merge ``patch`` into a copy of ``base`` (see the module docstring for the rules)."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            if v is None:
                out.pop(k, None)
            elif k in out:
                out[k] = strategic_merge(out[k], v, k)
            else:
                out[k] = copy.deepcopy(v)
        return out
    if isinstance(base, list) and isinstance(patch, list) and field in _MERGE_KEYS:
        key = _MERGE_KEYS[field]
        out_list = [copy.deepcopy(item) for item in base]
        for item in patch:
            idx = next((i for i, b in enumerate(out_list) if b.get(key) == item.get(key)), None)
            if idx is None:
                out_list.append(copy.deepcopy(item))
            else:
                out_list[idx] = strategic_merge(out_list[idx], item, field)
        return out_list
    return copy.deepcopy(patch)


def _load_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _apply_images(doc: dict[str, Any], images: list[dict[str, Any]]) -> None:
    path = _POD_SPEC_PATHS.get(doc["kind"])
    if path is None:
        return
    spec: Any = doc
    for part in path:
        spec = spec.get(part, {})
    for container in [*spec.get("containers", []), *spec.get("initContainers", [])]:
        name = container["image"].split(":", 1)[0]
        for image in images:
            if image["name"] == name:
                unknown = set(image) - {"name", "newName", "newTag"}
                if unknown:
                    raise KustomizeError(f"images: unsupported keys {sorted(unknown)}")
                tag = image.get("newTag") or (container["image"].partition(":")[2] or None)
                new = image.get("newName", name)
                container["image"] = f"{new}:{tag}" if tag else new


def render(directory: Path) -> list[dict[str, Any]]:
    """Render the kustomization in ``directory``; returns the resource documents."""
    directory = Path(directory)
    kfile = directory / "kustomization.yaml"
    if not kfile.is_file():
        raise KustomizeError(f"no kustomization.yaml in {directory}")
    spec = yaml.safe_load(kfile.read_text())
    unknown = set(spec) - _KNOWN_FIELDS
    if unknown:
        raise KustomizeError(f"{kfile}: unsupported fields {sorted(unknown)}")

    docs: list[dict[str, Any]] = []
    for entry in spec.get("resources", []):
        path = (directory / entry).resolve()
        docs.extend(render(path) if path.is_dir() else _load_docs(path))
    keys = [_key(d) for d in docs]
    if len(set(keys)) != len(keys):
        raise KustomizeError(f"{kfile}: duplicate resources {keys}")

    for patch_entry in spec.get("patches", []):
        if set(patch_entry) != {"path"}:
            raise KustomizeError(f"{kfile}: only patches with 'path' are supported: {patch_entry}")
        for patch in _load_docs(directory / patch_entry["path"]):
            idx = next((i for i, d in enumerate(docs) if _key(d) == _key(patch)), None)
            if idx is None:
                raise KustomizeError(f"patch {patch_entry['path']}: no resource {_key(patch)}")
            docs[idx] = strategic_merge(docs[idx], patch)

    for label_spec in spec.get("labels", []):
        if label_spec.get("includeSelectors") or label_spec.get("includeTemplates"):
            raise KustomizeError("labels: only includeSelectors/includeTemplates false supported")
        for doc in docs:
            doc["metadata"].setdefault("labels", {}).update(label_spec["pairs"])

    if spec.get("images"):
        for doc in docs:
            _apply_images(doc, spec["images"])

    if "namespace" in spec:
        for doc in docs:
            if doc["kind"] not in _CLUSTER_SCOPED:
                doc["metadata"]["namespace"] = spec["namespace"]
    return docs
