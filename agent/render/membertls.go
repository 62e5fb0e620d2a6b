package render

// Member TLS (api.Settings.MemberTLS): an addon's redis members and
// sentinels listen on TLS only and replicate over TLS; HAProxy reaches
// them over TLS and verifies them. Each file renders its part from the
// same MemberTLS.

// MemberTLS are the files a member speaking TLS reads: the addon's
// certificate and key and the cluster CA, each a PEM file in the member's
// dir (mode 0600, written by the agent).
type MemberTLS struct {
	CertFile string
	KeyFile  string
	CAFile   string
}

func (t *MemberTLS) validate(file string) error {
	if t == nil {
		return nil
	}
	for _, p := range []struct{ what, path string }{{"TLS certificate file", t.CertFile}, {"TLS key file", t.KeyFile}, {"TLS CA file", t.CAFile}} {
		if err := checkPath(file, p.what, p.path); err != nil {
			return err
		}
	}
	return nil
}

// listen writes the network lines of a redis or sentinel: plaintext port,
// or (member TLS) port 0 and tls-port with the files.
//
// tls-auth-clients no: clients are not asked for a certificate. Every
// client still logs in with a password (the app's user, the fleet's user,
// the sentinels' requirepass): the password is the credential, TLS is the
// privacy and the server's identity. A client certificate would have to
// reach every app (and every app's client library would have to be given
// it), for no access the password does not already decide.
// tls-replication yes: a replica connects to its primary over TLS, and a
// sentinel to the members and to the other sentinels (they all listen on
// TLS only). Redis checks the peer's chain against tls-ca-cert-file, not
// its host name.
func (t *MemberTLS) listen(c *conf, port int) {
	if t == nil {
		c.line("port", itoa(port))
		return
	}
	c.comment(false, "Member TLS: TLS only, replication and sentinel links over TLS; clients log in with a password,",
		"no client certificate (tls-auth-clients no). A renewed certificate: redis reloads it live (CONFIG SET),",
		"a sentinel at a restart, one sentinel of the addon at a time (agent/membertls.go).")
	c.line("port", "0")
	c.line("tls-port", itoa(port))
	c.line("tls-cert-file", t.CertFile)
	c.line("tls-key-file", t.KeyFile)
	c.line("tls-ca-cert-file", t.CAFile)
	c.line("tls-auth-clients", "no")
	c.line("tls-replication", "yes")
}
