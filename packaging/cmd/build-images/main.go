// Command build-images builds cacheplane's OCI image tarballs from the
// binaries installed on this machine (no registry, no network):
//
//	go run ./packaging/cmd/build-images -out /var/lib/cacheplane/images
//
// It writes <out>/<name>.tar per image and <out>/images.json, which the
// agent's containerd driver imports from when an image is missing.
package main

import (
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/cacheplane/cacheplane/packaging"
)

func main() {
	out := flag.String("out", "images", "output directory")
	flag.Parse()
	start := time.Now()
	ix, err := packaging.WriteDir(*out, packaging.DefaultImages(), packaging.OptionalImage, func(format string, args ...any) {
		fmt.Printf(format+"\n", args...)
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "build-images:", err)
		os.Exit(1)
	}
	fmt.Printf("%d images in %s in %s\n", len(ix.Images), *out, time.Since(start).Round(time.Millisecond))
}
