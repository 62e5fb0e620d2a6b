package redisctl

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseReplication(t *testing.T) {
	master := strings.ReplaceAll(`# Replication
role:master
connected_slaves:2
slave0:ip=127.0.0.12,port=6380,state=online,offset=1234,lag=0
slave1:ip=127.0.0.13,port=6381,state=wait_bgsave,offset=0,lag=1
master_failover_state:no-failover
master_replid:2a3b1e5c0c1b6e9c3a4f5d6e7f8091a2b3c4d5e6
master_replid2:0000000000000000000000000000000000000000
master_repl_offset:1234
second_repl_offset:-1
repl_backlog_active:1
`, "\n", "\r\n")
	replica := `# Replication
role:slave
master_host:127.0.0.11
master_port:6379
master_link_status:up
master_last_io_seconds_ago:1
master_sync_in_progress:0
slave_read_repl_offset:1220
slave_repl_offset:1220
slave_priority:100
slave_read_only:1
replica_announced:1
connected_slaves:0
master_failover_state:no-failover
master_repl_offset:1220
`
	tests := []struct {
		name    string
		in      string
		want    Replication
		wantErr string
	}{
		{name: "master with two replicas (CRLF)", in: master, want: Replication{Role: RoleMaster, Offset: 1234, Replicas: []ReplicaInfo{
			{IP: "127.0.0.12", Port: 6380, State: "online", Offset: 1234, Lag: 0},
			{IP: "127.0.0.13", Port: 6381, State: "wait_bgsave", Offset: 0, Lag: 1},
		}}},
		{name: "replica", in: replica, want: Replication{Role: RoleReplica, Offset: 1220, MasterHost: "127.0.0.11", MasterPort: 6379, LinkStatus: "up"}},
		{name: "lonely master", in: "role:master\nconnected_slaves:0\nmaster_repl_offset:0\n", want: Replication{Role: RoleMaster}},
		{name: "replica link down", in: "role:slave\nmaster_host:10.0.0.1\nmaster_port:7000\nmaster_link_status:down\nmaster_repl_offset:0\n",
			want: Replication{Role: RoleReplica, MasterHost: "10.0.0.1", MasterPort: 7000, LinkStatus: "down"}},
		{name: "empty", in: "", wantErr: "no role"},
		{name: "unknown role", in: "role:sentinel\n", wantErr: `unknown role "sentinel"`},
		{name: "bad offset", in: "role:master\nmaster_repl_offset:x\n", wantErr: "master_repl_offset"},
		{name: "bad port", in: "role:slave\nmaster_host:h\nmaster_port:p\n", wantErr: "master_port"},
		{name: "bad replica line", in: "role:master\nconnected_slaves:1\nslave0:ip=1.2.3.4,port=x,state=online\n", wantErr: "slave0"},
		{name: "replica line without address", in: "role:master\nconnected_slaves:1\nslave0:state=online,offset=1\n", wantErr: "no ip or port"},
		{name: "count mismatch", in: "role:master\nconnected_slaves:2\nslave0:ip=1.2.3.4,port=1,state=online,offset=0,lag=0\n", wantErr: "connected_slaves:2 but 1"},
		{name: "slave_ fields are not replicas", in: "role:slave\nslave_repl_offset:5\nslave_priority:100\nmaster_repl_offset:5\n", want: Replication{Role: RoleReplica, Offset: 5}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseReplication(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestReplicationHelpers(t *testing.T) {
	r := Replication{Role: RoleReplica, MasterHost: "127.0.0.11", MasterPort: 6379}
	if r.IsMaster() || r.Master() != "127.0.0.11:6379" {
		t.Errorf("replica: IsMaster %v, Master %q", r.IsMaster(), r.Master())
	}
	m := Replication{Role: RoleMaster, Replicas: []ReplicaInfo{{IP: "::1", Port: 7}}}
	if !m.IsMaster() || m.Master() != "" || m.Replicas[0].Addr() != "[::1]:7" {
		t.Errorf("master: IsMaster %v, Master %q, replica %q", m.IsMaster(), m.Master(), m.Replicas[0].Addr())
	}
}

func TestCmdNameHidesArguments(t *testing.T) {
	tests := []struct {
		args []any
		want string
	}{
		{[]any{"CONFIG", "SET", "requirepass", "secret"}, "CONFIG SET"},
		{[]any{"AUTH", "secret"}, "AUTH"},
		{[]any{"REPLICAOF", "127.0.0.1", "6379"}, "REPLICAOF 127.0.0.1 6379"},
		{[]any{"SENTINEL", "FAILOVER", "x"}, "SENTINEL FAILOVER"},
		{nil, ""},
	}
	for _, tc := range tests {
		if got := cmdName(tc.args); got != tc.want {
			t.Errorf("cmdName(%q) = %q, want %q", tc.args, got, tc.want)
		}
	}
}
