// Package packaging builds the OCI images cacheplane runs, one per engine
// version and role of the catalog (api.DefaultEngines), without a registry.
//
// An image is one uncompressed layer (the images never cross a network, and
// the digest then depends on the files only, not on a compressor): the
// binaries, every shared library they load (with the loader and the
// symlinks leading to each file, so names a binary switches on, like
// redis-sentinel -> redis-check-rdb, survive), a minimal /etc (passwd,
// group, nsswitch.conf, hosts) and /tmp. The image config has no Entrypoint
// or Cmd: the agent passes the full argv. Output is an OCI image-layout
// tarball per image, plus an index file (images.json) naming the file for
// each image reference; the containerd runtime driver imports from that
// directory when an image is missing. Build them with
//
//	go run ./packaging/cmd/build-images -out .dev/images -debian .dev/debian
//
// (make images).
//
// # Where the files come from
//
//   - Versions the host installs (Redis 7.0.15, its sentinel, HAProxy 2.6
//     from bookworm): the host's files and the libraries `ldd` lists.
//   - Versions of other Debian suites (Valkey 8.0.1 from bookworm-backports;
//     Valkey 8.1.1 and Redis 8.0.2 from trixie): their packages are
//     downloaded, never installed, through a private apt configuration kept
//     in the -debian cache directory — a sources list naming the host's own
//     mirror (read from /etc/apt at build time) and the suite, private lists,
//     cache and an empty dpkg status, none of the host's apt hooks — with
//     `apt-get -c FILE update` and `apt-get download`, then unpacked with
//     `dpkg-deb -x`. bookworm-backports' binaries run on the host's
//     libraries. trixie's need a newer glibc: their library packages come
//     along (the lib dependencies, recursively), and the binaries' libraries
//     are found with the unpacked tree's own loader (`ld.so --list` with the
//     tree's library path; a library found outside the tree is an error), so
//     the image holds trixie's loader and libc under the merged-/usr paths.
//     The host's apt configuration, lists, caches and installed packages are
//     never changed (a test checks it).
//
// What was resolved for each image (package versions and SHA-256) is locked
// in the cache; a rebuild with the same sources reuses the checked .deb
// files and unpacked trees without apt or network (about 1 s for all six
// images here, about 5 s from an empty cache).
//
// Before an image is written, its server binary runs with --version —
// through the image's own loader and libraries when it carries them — and
// must report the catalog's version. Tests run every image under containerd
// and replicate between every pair of versions.
//
// Builds are reproducible: entries are sorted, owners are 0:0 and every
// mtime is fixed, so the same files give the same digests.
//
// The package owns the image layout and where its files come from. It does
// not talk to containerd (agent/runtime imports the tarballs) and does not
// install packages. It uses the standard library only, and runs apt-get,
// apt-cache, dpkg-deb and ldd.
package packaging
