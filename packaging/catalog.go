package packaging

import "github.com/cacheplane/cacheplane/api"

// libgcc_s is dlopen'ed by glibc for pthread_cancel and unwinding, which
// ldd does not always list.
const libgccS = "/lib/x86_64-linux-gnu/libgcc_s.so.1"

// DefaultImages are the images of api's engine catalog, from the Debian
// packages' paths. Valkey is optional: it is built only when installed.
func DefaultImages() []Image {
	return []Image{
		{Name: "redis-7.0", Ref: api.ImageRedis7,
			Binaries: []string{"/usr/bin/redis-server", "/usr/bin/redis-cli"},
			Optional: []string{"/usr/bin/redis-check-aof", libgccS}},
		{Name: "redis-sentinel-7.0", Ref: api.ImageSentinel7,
			Binaries: []string{"/usr/bin/redis-sentinel", "/usr/bin/redis-cli"},
			Optional: []string{libgccS}},
		{Name: "haproxy-2.6", Ref: api.ImageHAProxy,
			Binaries: []string{"/usr/sbin/haproxy"},
			Optional: []string{libgccS}},
		{Name: "valkey-8.0", Ref: api.ImageValkey8,
			Binaries: []string{"/usr/bin/valkey-server"},
			Optional: []string{"/usr/bin/valkey-sentinel", "/usr/bin/valkey-cli", "/usr/bin/valkey-check-aof", libgccS}},
	}
}

// OptionalImage reports whether an image may be skipped when its binaries
// are not installed (valkey comes from bookworm-backports).
func OptionalImage(img Image) bool { return img.Ref == api.ImageValkey8 }
