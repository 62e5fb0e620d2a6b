// Command deb builds cacheplane's Debian packages (make packages):
//
//	go run ./packaging/deb -images .dev/images -out bin/packages
//
// writes cacheplane-coordinator_<v>_<arch>.deb, cacheplane-agent_… and
// cacheplane_… (the operator CLI). It builds the three binaries itself,
// static (CGO_ENABLED=0) and -trimpath, so a package depends only on what
// its daemon runs: the coordinator on adduser, the agent on containerd,
// runc and iproute2, the CLI on nothing. The version comes from
// `git describe --tags --always --dirty` (DebVersion), the files' mtime
// from the last commit, so a rebuild of a commit gives the same packages.
//
// What goes in each package is its nfpm configuration beside this file
// (cacheplane-coordinator.yaml, cacheplane-agent.yaml, cacheplane.yaml):
// binaries in /usr/bin, units (systemd/) in /lib/systemd/system, example
// configs in /etc/cacheplane as conffiles, /var/lib/cacheplane, the
// agent's images in /usr/share/cacheplane/images, and the maintainer
// scripts in scripts/ (a system user for the coordinator; units enabled
// but not started on first install, try-restarted on upgrade).
//
// # Why nfpm and not dpkg-deb
//
// nfpm (github.com/goreleaser/nfpm/v2) is a Go library: the build needs no
// Debian tool, no debian/ directory and no fakeroot — file owners and modes
// are written into the archive as declared, not taken from the build
// tree, which dpkg-deb would need fakeroot (or a root-owned staging tree)
// for; conffiles and maintainer scripts are declared beside the files
// they belong to; and the same configuration could later give .rpm or
// .apk packages. dpkg and debootstrap are used only by the test, which
// installs the packages as Debian would.
//
// The package owns the package layout and the maintainer scripts. The
// unit files are package systemd's; the images are package packaging's.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	var o Options
	flag.StringVar(&o.Out, "out", "bin/packages", "directory the .deb files are written to")
	flag.StringVar(&o.Images, "images", ".dev/images", "images built by `make images` (images.json and its .tar files), carried by the agent package")
	flag.StringVar(&o.Root, "root", ".", "the repository's top directory")
	flag.StringVar(&o.Version, "version", "", "Debian version of the packages (default: from git describe)")
	flag.StringVar(&o.Arch, "arch", "", "Debian architecture (default: the Go architecture built for)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	debs, err := Build(ctx, o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "packages:", err)
		os.Exit(1)
	}
	for _, d := range debs {
		fmt.Println(d)
	}
}
