package render

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/redisctl"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

// testPassword (the app's) and testFleet (the fleet's credential) look like
// real ones: 64 URL-safe characters.
const (
	testPassword = "pw_0123456789-abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWX"
	testFleet    = "fl_0123456789-abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWX"
)

func starter() RedisInput {
	return RedisInput{
		Engine:        api.EngineRedis,
		BindAddr:      "127.0.0.11",
		Port:          6379,
		DataDir:       "/var/lib/cacheplane/members/my-app-3030-r1/data",
		Password:      api.NewSecret(testPassword),
		FleetPassword: api.NewSecret(testFleet),
		PlanMemoryMB:  1024,
		Settings:      api.DefaultSettings(),
	}
}

func sentinelInput() SentinelInput {
	return SentinelInput{
		BindAddr:   "127.0.0.13",
		Port:       26379,
		DataDir:    "/var/lib/cacheplane/members/my-app-3030-s3/data",
		MasterName: "my-app-3030",
		Primary:    Endpoint{"127.0.0.11", 6379},
		Password:   api.NewSecret(testFleet),
	}
}

func haproxyInput() HAProxyInput {
	return HAProxyInput{
		AddonID:    "my-app-3030",
		Entrypoint: Endpoint{"127.0.0.20", 30300},
		Local:      Endpoint{"127.0.0.13", 30300},
		SourceAddr: "127.0.0.13",
		Servers: []HAProxyServer{
			{Name: "my-app-3030-r1", Addr: "127.0.0.11", Port: 6379},
			{Name: "my-app-3030-r2", Addr: "127.0.0.12", Port: 6379},
		},
		Password:    api.NewSecret(testFleet),
		StatsSocket: "/var/lib/cacheplane/members/my-app-3030-p1/haproxy.sock",
	}
}

// accessInput is haproxyInput with TLS beside plaintext and a public
// address.
func accessInput() HAProxyInput {
	in := haproxyInput()
	in.Access = &HAProxyAccess{
		CertFile: "/var/lib/cacheplane/members/my-app-3030-p1/tls.pem",
		Socket:   "/var/lib/cacheplane/members/my-app-3030-p1/tls.sock",
		Switches: "/var/lib/cacheplane/members/my-app-3030-p1/switches.lst",
		Public:   Endpoint{"127.0.0.113", 30300},
	}
	return in
}

type goldenCase struct {
	name   string
	render func() (string, error)
}

func goldenCases() []goldenCase {
	redis := func(mod func(*RedisInput)) func() (string, error) {
		return func() (string, error) {
			in := starter()
			mod(&in)
			return Redis(in)
		}
	}
	return []goldenCase{
		{"redis-starter-rdb", redis(func(*RedisInput) {})},
		{"redis-starter-aof", redis(func(in *RedisInput) { in.Settings.Persistence = api.PersistenceAOF })},
		{"redis-cache-mode", redis(func(in *RedisInput) { in.Settings.CacheMode = true; in.PlanMemoryMB = 256 })},
		{"redis-replica", redis(func(in *RedisInput) {
			in.BindAddr = "127.0.0.12"
			in.DataDir = "/var/lib/cacheplane/members/my-app-3030-r2/data"
			in.ReplicaOf = Endpoint{"127.0.0.11", 6379}
		})},
		{"valkey-starter", redis(func(in *RedisInput) { in.Engine = api.EngineValkey })},
		{"sentinel", func() (string, error) { return Sentinel(sentinelInput()) }},
		{"haproxy", func() (string, error) { return HAProxy(haproxyInput()) }},
		{"haproxy-no-vip-maxconn", func() (string, error) {
			in := haproxyInput()
			in.MaxConn = 500
			in.Entrypoint = in.Local // no VIP: one frontend, on the member's own address
			return HAProxy(in)
		}},
		{"haproxy-access", func() (string, error) { return HAProxy(accessInput()) }},
	}
}

func TestGolden(t *testing.T) {
	for _, tc := range goldenCases() {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.render()
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", tc.name+".golden")
			if *update {
				if err := os.MkdirAll("testdata", 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test ./agent/render -update)", err)
			}
			if got != string(want) {
				t.Errorf("%s differs from the golden file (run go test ./agent/render -update and review the diff):\n%s", path, got)
			}
		})
	}
}

func TestRedisDirectives(t *testing.T) {
	has := func(t *testing.T, conf string, lines ...string) {
		t.Helper()
		set := map[string]bool{}
		for _, l := range strings.Split(conf, "\n") {
			set[l] = true
		}
		for _, l := range lines {
			if !set[l] {
				t.Errorf("missing line %q", l)
			}
		}
	}
	conf, err := Redis(starter())
	if err != nil {
		t.Fatal(err)
	}
	has(t, conf,
		"databases 5", "timeout 150",
		"user default on >"+testPassword+" ~* &* +@all -config -replicaof -slaveof -shutdown -debug -acl -module -failover"+
			" -cluster -save -bgsave -bgrewriteaof -sync -psync -replconf -migrate +acl|whoami +acl|cat +acl|genpass +acl|help",
		"user cacheplane on >"+testFleet+" ~* &* +@all", "masteruser cacheplane",
		"masterauth "+testFleet, "save 900 1", "save 300 10", "save 60 10000",
		"appendonly no", "maxmemory 1024mb", "maxmemory-policy noeviction",
		"bind 127.0.0.11", "bind-source-addr 127.0.0.11", "replica-announce-ip 127.0.0.11",
		"protected-mode no", "daemonize no", `logfile ""`, "dbfilename dump.rdb",
		"min-replicas-to-write 0")
	if strings.Contains(conf, "\nreplicaof ") {
		t.Error("a primary has a replicaof line")
	}

	in := starter()
	in.Settings = api.Settings{Persistence: api.PersistenceAOF, CacheMode: true}
	in.ReplicaOf = Endpoint{"127.0.0.12", 7000}
	in.AnnounceIP = "10.0.0.5"
	conf, err = Redis(in)
	if err != nil {
		t.Fatal(err)
	}
	has(t, conf, "appendonly yes", "appendfsync always", "maxmemory-policy allkeys-lru",
		"replicaof 127.0.0.12 7000", "replica-announce-ip 10.0.0.5", "bind-source-addr 127.0.0.11")
}

func TestInvalidInputs(t *testing.T) {
	redis := func(mod func(*RedisInput)) error {
		in := starter()
		mod(&in)
		_, err := Redis(in)
		return err
	}
	sentinel := func(mod func(*SentinelInput)) error {
		in := sentinelInput()
		mod(&in)
		_, err := Sentinel(in)
		return err
	}
	haproxy := func(mod func(*HAProxyInput)) error {
		in := haproxyInput()
		mod(&in)
		_, err := HAProxy(in)
		return err
	}
	cases := []struct {
		name string
		err  error
	}{
		{"redis engine", redis(func(in *RedisInput) { in.Engine = "memcached" })},
		{"redis no bind", redis(func(in *RedisInput) { in.BindAddr = "" })},
		{"redis bind hostname", redis(func(in *RedisInput) { in.BindAddr = "localhost" })},
		{"redis bind any", redis(func(in *RedisInput) { in.BindAddr = "0.0.0.0" })},
		{"redis port", redis(func(in *RedisInput) { in.Port = 0 })},
		{"redis port high", redis(func(in *RedisInput) { in.Port = 65536 })},
		{"redis announce", redis(func(in *RedisInput) { in.AnnounceIP = "x" })},
		{"redis relative dir", redis(func(in *RedisInput) { in.DataDir = "data" })},
		{"redis dir space", redis(func(in *RedisInput) { in.DataDir = "/var/lib/my data" })},
		{"redis dir unclean", redis(func(in *RedisInput) { in.DataDir = "/var/lib/../data" })},
		{"redis no password", redis(func(in *RedisInput) { in.Password = api.NewSecret("") })},
		{"redis password space", redis(func(in *RedisInput) { in.Password = api.NewSecret("secret with space") })},
		{"redis password quote", redis(func(in *RedisInput) { in.Password = api.NewSecret(`secret"quote`) })},
		{"redis password dollar", redis(func(in *RedisInput) { in.Password = api.NewSecret("secret$HOME") })},
		{"redis password newline", redis(func(in *RedisInput) { in.Password = api.NewSecret("secret\nsave 1 1") })},
		{"redis no fleet credential", redis(func(in *RedisInput) { in.FleetPassword = api.Secret{} })},
		{"redis fleet credential quote", redis(func(in *RedisInput) { in.FleetPassword = api.NewSecret(`secret"quote`) })},
		{"redis fleet credential is the app's", redis(func(in *RedisInput) { in.FleetPassword = in.Password })},
		{"sentinel no password", sentinel(func(in *SentinelInput) { in.Password = api.Secret{} })},
		{"haproxy no password", haproxy(func(in *HAProxyInput) { in.Password = api.Secret{} })},
		{"redis memory", redis(func(in *RedisInput) { in.PlanMemoryMB = 0 })},
		{"redis persistence", redis(func(in *RedisInput) { in.Settings.Persistence = "none" })},
		{"redis replica of itself", redis(func(in *RedisInput) { in.ReplicaOf = Endpoint{in.BindAddr, in.Port} })},
		{"redis replica no port", redis(func(in *RedisInput) { in.ReplicaOf = Endpoint{Addr: "127.0.0.12"} })},
		{"sentinel master name", sentinel(func(in *SentinelInput) { in.MasterName = "my app" })},
		{"sentinel no primary", sentinel(func(in *SentinelInput) { in.Primary = Endpoint{} })},
		{"sentinel password", sentinel(func(in *SentinelInput) { in.Password = api.NewSecret("a b") })},
		{"sentinel dir", sentinel(func(in *SentinelInput) { in.DataDir = "" })},
		{"haproxy no servers", haproxy(func(in *HAProxyInput) { in.Servers = nil })},
		{"haproxy duplicate server", haproxy(func(in *HAProxyInput) { in.Servers[1].Name = in.Servers[0].Name })},
		{"haproxy server name", haproxy(func(in *HAProxyInput) { in.Servers[0].Name = "r 1" })},
		{"haproxy source", haproxy(func(in *HAProxyInput) { in.SourceAddr = "" })},
		{"haproxy entrypoint", haproxy(func(in *HAProxyInput) { in.Entrypoint.Port = -1 })},
		{"haproxy maxconn", haproxy(func(in *HAProxyInput) { in.MaxConn = -5 })},
		{"haproxy addon id", haproxy(func(in *HAProxyInput) { in.AddonID = "-x" })},
		{"haproxy stats socket", haproxy(func(in *HAProxyInput) { in.StatsSocket = "rel/sock" })},
		{"haproxy no stats socket", haproxy(func(in *HAProxyInput) { in.StatsSocket = "" })},
		{"haproxy stats socket too long", haproxy(func(in *HAProxyInput) { in.StatsSocket = "/" + strings.Repeat("d", 100) + "/haproxy.sock" })},
		{"haproxy own address", haproxy(func(in *HAProxyInput) { in.Local.Port = 0; in.Local.Addr = "127.0.0.13" })},
		{"haproxy password", haproxy(func(in *HAProxyInput) { in.Password = api.NewSecret(`back\slash`) })},
		{"haproxy certificate path", haproxy(func(in *HAProxyInput) { in.Access = accessInput().Access; in.Access.CertFile = "tls.pem" })},
		{"haproxy TLS socket too long", haproxy(func(in *HAProxyInput) {
			in.Access = accessInput().Access
			in.Access.Socket = "/" + strings.Repeat("d", 100) + "/tls.sock"
		})},
		{"haproxy switches file", haproxy(func(in *HAProxyInput) { in.Access = accessInput().Access; in.Access.Switches = "" })},
		{"haproxy public address", haproxy(func(in *HAProxyInput) { in.Access = accessInput().Access; in.Access.Public.Addr = "0.0.0.0" })},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.err == nil {
				t.Fatal("accepted")
			}
			if !errors.Is(tc.err, api.ErrInvalid) {
				t.Errorf("error %q does not wrap api.ErrInvalid", tc.err)
			}
			for _, secret := range []string{testPassword, testFleet, "secret"} {
				if strings.Contains(tc.err.Error(), secret) {
					t.Errorf("error %q repeats the password", tc.err)
				}
			}
		})
	}
}

// TestRedisIgnoresAccessSettings: force TLS and internet access are the
// entrypoint's business (haproxyaccess.go): redis.conf is the same with
// them on, so switching them restarts no redis.
func TestRedisIgnoresAccessSettings(t *testing.T) {
	in := starter()
	in.Settings.ForceTLS, in.Settings.InternetAccess = true, true
	a, err := Redis(in)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Redis(starter())
	if err != nil {
		t.Fatal(err)
	}
	if a != b {
		t.Error("redis.conf changes with force TLS or internet access")
	}
}

func TestDefaultsFilled(t *testing.T) {
	in := starter()
	in.Engine = ""
	in.Settings.Persistence = ""
	a, err := Redis(in)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Redis(starter())
	if err != nil {
		t.Fatal(err)
	}
	if a != b {
		t.Error("empty engine and persistence do not render as redis and rdb")
	}
}

// TestRedisSettingsFromRedisctl: every CONFIG parameter redisctl maps the
// settings to is in redis.conf with redisctl's value, so the file and a
// live change (redisctl.LiveChange) never disagree.
func TestRedisSettingsFromRedisctl(t *testing.T) {
	for _, s := range []api.Settings{
		{Persistence: api.PersistenceRDB}, {Persistence: api.PersistenceAOF},
		{Persistence: api.PersistenceRDB, CacheMode: true}, {Persistence: api.PersistenceAOF, CacheMode: true},
	} {
		in := starter()
		in.Settings = s
		conf, err := Redis(in)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string][]string{}
		for _, l := range strings.Split(conf, "\n") {
			if f := strings.Fields(l); len(f) > 1 && !strings.HasPrefix(f[0], "#") {
				got[f[0]] = append(got[f[0]], strings.Join(f[1:], " "))
			}
		}
		for _, p := range redisctl.Config(s, in.PlanMemoryMB) {
			if v := strings.Join(got[p.Name], " "); v != p.Value {
				t.Errorf("%+v: redis.conf says %s %q, redisctl %q", s, p.Name, v, p.Value)
			}
		}
	}
}

func TestContainerMemoryLimit(t *testing.T) {
	for _, tc := range []struct {
		planMB int
		want   int64
	}{
		{25, (2*25 + 64) << 20},
		{1024, (2*1024 + 64) << 20},
		{0, 64 << 20},
	} {
		if got := ContainerMemoryLimitBytes(tc.planMB); got != tc.want {
			t.Errorf("ContainerMemoryLimitBytes(%d) = %d, want %d", tc.planMB, got, tc.want)
		}
		if tc.planMB > 0 && ContainerMemoryLimitBytes(tc.planMB) <= int64(tc.planMB)<<20 {
			t.Errorf("limit for %d MB is not above maxmemory", tc.planMB)
		}
	}
}

func TestHAProxyLimits(t *testing.T) {
	if got := HAProxyGlobalMaxConn(0); got != DefaultMaxConn+2*maxConnMargin {
		t.Errorf("HAProxyGlobalMaxConn(0) = %d", got)
	}
	if got := HAProxyOpenFiles(2000); got < 2*2000 {
		t.Errorf("HAProxyOpenFiles(2000) = %d, below two sockets per connection", got)
	}
	conf, err := HAProxy(haproxyInput())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"    maxconn 2128", "    maxconn 2064", "{ fe_conn gt 2000 }", "    timeout connect 100ms",
		"    source 127.0.0.13", "    bind 127.0.0.20:30300 transparent", "    bind 127.0.0.13:30300", "    maxconn 16",
		"    server my-app-3030-r2 127.0.0.12:6379 check inter 200ms rise 1 fall 1 on-marked-down shutdown-sessions", "frontend fe_my-app-3030", "frontend fe_my-app-3030_local",
		"    stats socket /var/lib/cacheplane/members/my-app-3030-p1/haproxy.sock mode 600 level admin",
		`    tcp-check expect rstring role:master|-BUSY`, "    timeout check 30s",
	} {
		if !strings.Contains(conf, want+"\n") {
			t.Errorf("haproxy.cfg lacks %q", want)
		}
	}
	if strings.Contains(conf, "timeout client ") || strings.Contains(conf, "timeout server ") {
		t.Error("haproxy.cfg has an inactivity timeout that would cut a BLPOP")
	}
	in := haproxyInput()
	in.Entrypoint = Endpoint{"::1", 30300}
	in.Local = in.Entrypoint
	in.Servers[0].Addr = "::1"
	in.SourceAddr = "::1"
	conf, err = HAProxy(in)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(conf, "bind [::1]:30300\n") || !strings.Contains(conf, "my-app-3030-r1 [::1]:6379 check") ||
		!strings.Contains(conf, "source [::1]\n") {
		t.Errorf("IPv6 addresses are not bracketed:\n%s", conf)
	}
	// The runtime API adds a server with the file's options; its name
	// comes from its address.
	if n := HAProxyServerName("::1", 6379); n != "redis___1_6379" {
		t.Errorf("server name %q", n)
	}
	add := HAProxyAddServer("be_x", HAProxyServer{Name: "redis_127.0.0.12_6379", Addr: "127.0.0.12", Port: 6379})
	if len(add) != 2 || add[0] != "add server be_x/redis_127.0.0.12_6379 127.0.0.12:6379 check inter 200ms rise 1 fall 1 on-marked-down shutdown-sessions" ||
		add[1] != "enable health be_x/redis_127.0.0.12_6379" {
		t.Errorf("add server: %q", add)
	}
	// The shape leaves the servers out: a new server list, same shape.
	in2 := haproxyInput()
	in2.Servers = in2.Servers[:1]
	s1, _ := HAProxyShape(haproxyInput())
	s2, _ := HAProxyShape(in2)
	if s1 != s2 {
		t.Error("HAProxyShape depends on the server list")
	}
}
