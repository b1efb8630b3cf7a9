#!/usr/bin/env python3
"""Copy an OCI layout (blobs hardlinked) and add to image TAG one more layer holding
MIB MiB of incompressible data, as a derived `RUN` layer would; tag the result NEW_TAG.
Used by benches/disk.sh to show layerboot disk's memory does not grow with image size.

usage: grow-oci-image.py SRC_LAYOUT TAG DST_LAYOUT NEW_TAG MIB
"""
import gzip
import hashlib
import json
import os
import shutil
import sys
import tarfile


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def blob(layout, digest):
    return os.path.join(layout, "blobs", "sha256", digest.split(":", 1)[1])


def put_json(layout, obj):
    data = json.dumps(obj, separators=(",", ":")).encode()
    digest = hashlib.sha256(data).hexdigest()
    with open(os.path.join(layout, "blobs", "sha256", digest), "wb") as f:
        f.write(data)
    return "sha256:" + digest, len(data)


def main(src, tag, dst, new_tag, mib):
    shutil.copytree(src, dst, copy_function=os.link)
    index_path = os.path.join(dst, "index.json")
    index = json.load(open(index_path))
    desc = next(m for m in index["manifests"] if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag)
    manifest = json.load(open(blob(dst, desc["digest"])))
    config = json.load(open(blob(dst, manifest["config"]["digest"])))

    # The layer: one file of random bytes, written through tar and gzip while streaming.
    tar_path = os.path.join(dst, "layer.tar")
    filler = os.path.join(dst, "filler.bin")
    with open(filler, "wb") as f:
        for _ in range(mib):
            f.write(os.urandom(1 << 20))
    with tarfile.open(tar_path, "w", format=tarfile.PAX_FORMAT) as t:
        for d in ["usr", "usr/share", "usr/share/layerboot-bench"]:
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            t.addfile(info)
        t.add(filler, "usr/share/layerboot-bench/filler.bin")
    os.unlink(filler)
    diff_id = "sha256:" + sha256_file(tar_path)
    gz_path = tar_path + ".gz"
    with open(tar_path, "rb") as fin, gzip.open(gz_path, "wb", compresslevel=1) as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)
    os.unlink(tar_path)
    layer_digest = sha256_file(gz_path)
    size = os.path.getsize(gz_path)
    os.rename(gz_path, os.path.join(dst, "blobs", "sha256", layer_digest))

    config["rootfs"]["diff_ids"].append(diff_id)
    config.setdefault("history", []).append({"created_by": f"layerboot bench: {mib} MiB filler"})
    config_digest, config_size = put_json(dst, config)
    manifest["config"] = dict(manifest["config"], digest=config_digest, size=config_size)
    manifest["layers"].append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": "sha256:" + layer_digest, "size": size})
    manifest_digest, manifest_size = put_json(dst, manifest)
    new = dict(desc, digest=manifest_digest, size=manifest_size, annotations={"org.opencontainers.image.ref.name": new_tag})
    index["manifests"].append(new)
    # index.json is replaced, not edited in place: it is a hardlink to the source's.
    os.unlink(index_path)
    with open(index_path, "w") as f:
        json.dump(index, f)


if __name__ == "__main__":
    if len(sys.argv) != 6:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
