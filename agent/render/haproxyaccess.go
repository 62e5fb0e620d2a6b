package render

// How clients reach an entrypoint beyond plaintext on the private network:
// TLS beside plaintext on the same port, force TLS, internet access. Both
// switches are live: they are lines of a pattern file that HAProxy's ACLs
// read, which the agent changes at run time (`add acl`/`del acl`) as well
// as on disk, so switching restarts nothing and cuts no session. The
// addon's certificate is replaced at run time too (`set ssl cert`).

// Switch names: the lines of HAProxyAccess.Switches.
const (
	// SwitchForceTLS refuses plaintext clients (force TLS is on).
	SwitchForceTLS = "force-tls"
	// SwitchInternet opens the public frontend (internet access is on).
	SwitchInternet = "internet"
)

// tlsInspectDelay bounds how long a frontend waits for a new client's first
// bytes to tell a TLS ClientHello from plaintext. Redis clients speak
// first (HELLO, AUTH, PING), so the wait ends with their first command; a
// client silent that long is taken as plaintext (refused when TLS is
// forced).
const tlsInspectDelay = "5s"

// HAProxyAccess is what an entrypoint needs for TLS and internet access.
type HAProxyAccess struct {
	// CertFile is the addon's server certificate and key (one PEM file,
	// certificate first; mode 0600). HAProxy terminates TLS with it; the
	// agent replaces it at run time (`set ssl cert`, `commit ssl cert`).
	CertFile string
	// Socket is the unix socket of the frontend that terminates TLS: the
	// clients' frontends pass a connection that starts with a TLS
	// ClientHello to it, and it hands the decrypted stream to the same
	// backend as plaintext (the agent's routing is the same for both).
	Socket string
	// Switches is the pattern file of the live switches (SwitchForceTLS,
	// SwitchInternet, one a line).
	Switches string
	// Public is this host's public address with the entrypoint's port: a
	// frontend that accepts clients only while SwitchInternet is on (the
	// agent also closes it then: `disable frontend`). Zero: the host has
	// no public address.
	Public Endpoint
}

// HAProxyTLSFrontend is the name of the frontend terminating TLS.
func HAProxyTLSFrontend(addonID string) string { return "fe_" + addonID + "_tls" }

// HAProxyTLSBackend is the name of the backend passing TLS clients to
// HAProxyTLSFrontend.
func HAProxyTLSBackend(addonID string) string { return "be_" + addonID + "_tls" }

// HAProxyPublicFrontend is the name of the frontend on the host's public
// address (internet access).
func HAProxyPublicFrontend(addonID string) string { return "fe_" + addonID + "_public" }

func (a *HAProxyAccess) validate() error {
	if a == nil {
		return nil
	}
	const f = "haproxy.cfg"
	for _, p := range []struct{ what, path string }{{"certificate file", a.CertFile}, {"TLS socket", a.Socket}, {"switches file", a.Switches}} {
		if err := checkPath(f, p.what, p.path); err != nil {
			return err
		}
	}
	if len(a.Socket) > maxUnixPath {
		return invalidf(f, "TLS socket path %q is longer than %d bytes (a unix socket's limit): use a shorter data dir", a.Socket, maxUnixPath)
	}
	if !a.Public.IsZero() {
		if err := checkEndpoint(f, "public address", a.Public); err != nil {
			return err
		}
	}
	return nil
}

// clientRules are a clients' frontend's rules: a TLS ClientHello goes to
// the TLS backend, plaintext to the default backend, and plaintext is
// refused while TLS is forced. public adds the internet switch.
func (a *HAProxyAccess) clientRules(c *conf, addonID string, public bool) {
	if a == nil {
		return
	}
	c.comment(true, "TLS beside plaintext on the same port: a TLS ClientHello is terminated by "+HAProxyTLSFrontend(addonID)+";",
		"plaintext is refused while "+a.Switches+" says "+SwitchForceTLS+" (the agent switches it live).")
	c.indented("acl", "tls", "req.ssl_hello_type", "1")
	c.indented("acl", "force_tls", "str("+SwitchForceTLS+")", "-m", "str", "-f", a.Switches)
	if public {
		c.indented("acl", "internet", "str("+SwitchInternet+")", "-m", "str", "-f", a.Switches)
		c.comment(true, "Open only while internet access is on (the agent also disables this frontend then).")
		c.indented("tcp-request", "connection", "reject", "if", "!internet")
	}
	c.indented("tcp-request", "inspect-delay", tlsInspectDelay)
	c.indented("tcp-request", "content", "reject", "if", "force_tls", "!tls")
	c.indented("tcp-request", "content", "accept", "if", "tls")
	c.indented("tcp-request", "content", "accept", "if", "{", "req.len", "gt", "0", "}")
	c.indented("use_backend", HAProxyTLSBackend(addonID), "if", "tls")
}

// frontends renders the public frontend (when the host has a public
// address), the TLS-terminating frontend and the backend leading to it.
func (a *HAProxyAccess) frontends(c *conf, in HAProxyInput, limit int) {
	if a == nil {
		return
	}
	be := HAProxyBackend(in.AddonID)
	if !a.Public.IsZero() {
		c.line("frontend", HAProxyPublicFrontend(in.AddonID))
		c.comment(true, "This host's public address: internet access (off: every connection refused, and the",
			"agent disables the frontend, which releases the port).")
		c.indented("bind", a.Public.String())
		c.indented("maxconn", itoa(limit+maxConnMargin))
		c.indented("tcp-request", "connection", "reject", "if", "{", "fe_conn", "gt", itoa(limit), "}")
		clientKeepalive(c)
		a.clientRules(c, in.AddonID, true)
		c.indented("default_backend", be)
		c.blank()
	}
	c.line("backend", HAProxyTLSBackend(in.AddonID))
	c.indented("server", "tls", "unix@"+a.Socket)
	c.blank()
	c.line("frontend", HAProxyTLSFrontend(in.AddonID))
	c.comment(true, "Terminates the clients' TLS with the addon's certificate (replaced at run time:",
		"set ssl cert), then the same backend as plaintext.")
	c.indented("bind", "unix@"+a.Socket, "ssl", "crt", a.CertFile, "ssl-min-ver", "TLSv1.2")
	c.indented("maxconn", itoa(limit+maxConnMargin))
	c.indented("default_backend", be)
	c.blank()
}
