// Command build-images builds cacheplane's OCI image tarballs (no
// registry):
//
//	go run ./packaging/cmd/build-images -out .dev/images -debian .dev/debian
//
// It writes <out>/<name>.tar per image and <out>/images.json, which the
// agent's containerd driver imports from when an image is missing. Images
// of versions the host does not install come from Debian packages of other
// suites, downloaded through a private apt configuration kept in the
// -debian directory (the host's apt configuration and packages are left
// alone); a second run reuses them, offline. Without -debian, only the
// host's images are built.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/cacheplane/cacheplane/packaging"
)

func main() {
	out := flag.String("out", "images", "output directory")
	debian := flag.String("debian", "", "cache of Debian packages for the versions the host does not install (empty: skip those images)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	opts := packaging.Options{DebianDir: *debian, Logf: func(format string, args ...any) {
		fmt.Printf(format+"\n", args...)
	}}
	if *debian == "" {
		opts.Optional = packaging.OptionalImage
	}
	ix, err := packaging.WriteImages(ctx, *out, packaging.DefaultImages(), opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "build-images:", err)
		os.Exit(1)
	}
	fmt.Printf("%d images in %s in %s\n", len(ix.Images), *out, time.Since(start).Round(time.Millisecond))
}
