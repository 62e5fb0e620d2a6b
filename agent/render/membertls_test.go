package render

import (
	"errors"
	"strings"
	"testing"

	"github.com/cacheplane/cacheplane/api"
)

func testMemberTLS(dir string) *MemberTLS {
	return &MemberTLS{CertFile: dir + "/tls.crt", KeyFile: dir + "/tls.key", CAFile: dir + "/ca.crt"}
}

// lineSet is a rendered file's directive lines (comments left out).
func lineSet(conf string) map[string]bool {
	m := map[string]bool{}
	for _, l := range strings.Split(conf, "\n") {
		l = strings.TrimSpace(l)
		if l != "" && !strings.HasPrefix(l, "#") {
			m[l] = true
		}
	}
	return m
}

// TestMemberTLSLines: with member TLS, redis and sentinel listen on TLS
// only and replicate over TLS with the member's files; HAProxy's servers
// and role check go over TLS, verified; without it nothing of TLS is
// rendered.
func TestMemberTLSLines(t *testing.T) {
	const dir = "/var/lib/cacheplane/members/m1"
	tlsOn := []string{
		"port 0", "tls-port 6379", "tls-cert-file " + dir + "/tls.crt", "tls-key-file " + dir + "/tls.key",
		"tls-ca-cert-file " + dir + "/ca.crt", "tls-auth-clients no", "tls-replication yes",
	}
	sentinelOn := append([]string{}, tlsOn...)
	sentinelOn[1] = "tls-port 26379"
	hapServer := "server my-app-3030-r1 127.0.0.11:6379 check inter 200ms rise 1 fall 1 on-marked-down shutdown-sessions " +
		"ssl verify required ca-file " + dir + "/ca.crt verifyhost my-app-3030 check-ssl"
	cases := []struct {
		name      string
		render    func(on bool) (string, error)
		on, off   []string // lines present with / without member TLS
		notWhenOn []string
	}{
		{"redis", func(on bool) (string, error) {
			in := starter()
			if on {
				in.TLS = testMemberTLS(dir)
			}
			return Redis(in)
		}, tlsOn, []string{"port 6379"}, []string{"port 6379"}},
		{"sentinel", func(on bool) (string, error) {
			in := sentinelInput()
			if on {
				in.TLS = testMemberTLS(dir)
			}
			return Sentinel(in)
		}, sentinelOn, []string{"port 26379"}, []string{"port 26379"}},
		{"haproxy", func(on bool) (string, error) {
			in := haproxyInput()
			if on {
				for i := range in.Servers {
					in.Servers[i].TLS = &HAProxyServerTLS{CAFile: dir + "/ca.crt", ServerName: "my-app-3030"}
				}
			}
			return HAProxy(in)
		}, []string{hapServer, "tcp-check connect default"}, []string{"tcp-check connect"}, []string{"tcp-check connect"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, on := range []bool{true, false} {
				conf, err := c.render(on)
				if err != nil {
					t.Fatalf("member TLS %v: %v", on, err)
				}
				got := lineSet(conf)
				want, absent := c.off, []string{"tls-port", "tls-replication", "ssl verify", "check-ssl"}
				if on {
					want, absent = c.on, c.notWhenOn
				}
				for _, l := range want {
					if !got[l] {
						t.Errorf("member TLS %v: line %q missing:\n%s", on, l, conf)
					}
				}
				for _, l := range absent {
					for g := range got {
						if g == l || (!on && strings.Contains(g, l)) {
							t.Errorf("member TLS %v: unexpected line %q", on, g)
						}
					}
				}
			}
		})
	}
}

func TestMemberTLSAddServer(t *testing.T) {
	s := HAProxyServer{Name: "redis_127.0.0.12_6379", Addr: "127.0.0.12", Port: 6379,
		TLS: &HAProxyServerTLS{CAFile: "/d/ca.crt", ServerName: "my-app-3030"}}
	add := HAProxyAddServer("be_x", s)
	if !strings.HasSuffix(add[0], " ssl verify required ca-file /d/ca.crt verifyhost my-app-3030 check-ssl") {
		t.Fatalf("add server: %q", add[0])
	}
}

func TestMemberTLSInvalid(t *testing.T) {
	for name, f := range map[string]func() error{
		"relative cert": func() error {
			in := starter()
			in.TLS = &MemberTLS{CertFile: "tls.crt", KeyFile: "/d/tls.key", CAFile: "/d/ca.crt"}
			_, err := Redis(in)
			return err
		},
		"sentinel without CA": func() error {
			in := sentinelInput()
			in.TLS = &MemberTLS{CertFile: "/d/tls.crt", KeyFile: "/d/tls.key"}
			_, err := Sentinel(in)
			return err
		},
		"haproxy bad server name": func() error {
			in := haproxyInput()
			in.Servers[0].TLS = &HAProxyServerTLS{CAFile: "/d/ca.crt", ServerName: "bad name"}
			_, err := HAProxy(in)
			return err
		},
	} {
		if err := f(); !errors.Is(err, api.ErrInvalid) {
			t.Errorf("%s: err %v, want ErrInvalid", name, err)
		}
	}
}
