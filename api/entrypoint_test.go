package api

import (
	"errors"
	"testing"
)

func TestSettingsRequestEntrypoint(t *testing.T) {
	s := func(v string) *string { return &v }
	haproxy := Settings{Persistence: PersistenceRDB}
	kernel := Settings{Persistence: PersistenceRDB, Entrypoint: EntrypointKernel}
	cases := []struct {
		name    string
		cur     Settings
		mode    *string
		want    Settings
		invalid bool
	}{
		{"to kernel", haproxy, s("kernel"), kernel, false},
		{"back to haproxy", kernel, s("haproxy"), Settings{Persistence: PersistenceRDB, Entrypoint: EntrypointHAProxy}, false},
		{"haproxy on an addon made before the setting: unchanged", haproxy, s("haproxy"), haproxy, false},
		{"kernel again: unchanged", kernel, s("kernel"), kernel, false},
		{"unknown mode", haproxy, s("ipvs"), haproxy, true},
		{"empty mode", haproxy, s(""), haproxy, true},
	}
	for _, c := range cases {
		r := SettingsRequest{App: "my-app", Entrypoint: c.mode}
		got, err := r.Apply(c.cur)
		if c.invalid {
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("%s: %v, want invalid", c.name, err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%s: %+v %v, want %+v", c.name, got, err, c.want)
		}
	}
	// Force TLS and the kernel entrypoint: never together (the kernel
	// forwards to redis's plaintext port), in either order or at once.
	on, off := true, false
	tlsOn := Settings{Persistence: PersistenceRDB, ForceTLS: true}
	combos := []struct {
		name    string
		cur     Settings
		req     SettingsRequest
		invalid bool
	}{
		{"force TLS on a kernel addon", kernel, SettingsRequest{ForceTLS: &on}, true},
		{"kernel on a force-TLS addon", tlsOn, SettingsRequest{Entrypoint: s("kernel")}, true},
		{"both at once", haproxy, SettingsRequest{Entrypoint: s("kernel"), ForceTLS: &on}, true},
		{"force TLS with a switch back to haproxy", kernel, SettingsRequest{Entrypoint: s("haproxy"), ForceTLS: &on}, false},
		{"kernel with force TLS off", tlsOn, SettingsRequest{Entrypoint: s("kernel"), ForceTLS: &off}, false},
	}
	for _, c := range combos {
		c.req.App = "my-app"
		_, err := c.req.Apply(c.cur)
		if c.invalid != errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want invalid %v", c.name, err, c.invalid)
		}
	}
	if m := (Settings{}).EntrypointMode(); m != EntrypointHAProxy {
		t.Errorf("the mode of an addon made before the setting: %q, want haproxy", m)
	}
}
