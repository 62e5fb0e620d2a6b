// Package packaging builds the OCI images cacheplane runs, from binaries
// already installed on the machine, without a registry or any network.
//
// An image is one layer: the binaries, every shared library `ldd` lists for
// them (with the ld-linux loader and the symlinks leading to each file), a
// minimal /etc (passwd, group, nsswitch.conf) and /tmp. The image config has
// no Entrypoint or Cmd: the agent passes the full argv. Output is an OCI
// image-layout tarball per image, plus an index file (images.json) naming the
// file for each image reference; the containerd runtime driver imports from
// that directory when an image is missing.
//
// Builds are reproducible: entries are sorted, owners are 0:0 and every
// mtime is fixed, so the same installed binaries give the same digests.
//
// The package owns the image layout only. It does not talk to containerd
// (agent/runtime imports the tarballs) and does not install packages (the
// machine's apt does). It uses the standard library only.
package packaging
