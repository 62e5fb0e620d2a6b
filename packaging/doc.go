// Package packaging builds the OCI images cacheplane runs, from binaries
// already installed on the machine, without a registry or any network.
//
// An image is one uncompressed layer (the images never cross a network, and
// the digest then depends on the files only, not on a compressor): the
// binaries, every shared library `ldd` lists for them (with the ld-linux
// loader and the symlinks leading to each file, so names a binary switches
// on, like redis-sentinel -> redis-check-rdb, survive), a minimal /etc
// (passwd, group, nsswitch.conf, hosts) and /tmp. The image config has
// no Entrypoint or Cmd: the agent passes the full argv. Output is an OCI
// image-layout tarball per image, plus an index file (images.json) naming the
// file for each image reference; the containerd runtime driver imports from
// that directory when an image is missing. Build them with
//
//	go run ./packaging/cmd/build-images -out DIR
//
// (about 1.5 s for redis, sentinel and haproxy on a 2-vCPU machine).
//
// Builds are reproducible: entries are sorted, owners are 0:0 and every
// mtime is fixed, so the same installed binaries give the same digests.
//
// The package owns the image layout only. It does not talk to containerd
// (agent/runtime imports the tarballs) and does not install packages (the
// machine's apt does). It uses the standard library only.
package packaging
