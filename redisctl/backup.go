package redisctl

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// What a backup asks of a member: a background save it waits for
// (BGSave), the key count and a sample of keys with a digest of their
// values around it (ReadKeyspace, SampleKeys, DigestKeys), whether a
// scratch server finished loading (WaitLoaded), and the copy of a whole
// dataset from one server into another (CopyKeys).

// Endpoint is a redis server to talk to; Password "" sends no AUTH.
type Endpoint struct {
	Addr     string
	Password string
}

// Backup figures.
const (
	// savePoll is how often BGSave looks at a running save.
	savePoll = 50 * time.Millisecond
	// SampleMaxBytes and SampleMaxElements bound a sampled value (a
	// string's length, a collection's element count): larger keys are
	// not sampled, so a sample costs the member little and its digest
	// is read with one command.
	SampleMaxBytes    = 1 << 20
	SampleMaxElements = 1000
	// SampleMinTTL: a key that expires sooner is not sampled (it could be
	// gone when the sample is checked).
	SampleMinTTL = time.Hour
	// DefaultCopyBatch is how many keys CopyKeys moves per round trip.
	DefaultCopyBatch = 256
	// copyIOTimeout bounds one pipelined batch of CopyKeys (a RESTORE of
	// a large value takes a while).
	copyIOTimeout = time.Minute
)

// SaveState is what INFO persistence says of snapshots, as a backup reads
// it.
type SaveState struct {
	Loading bool
	// InProgress: a background save (to disk, or to a replica's socket)
	// runs. Saves counts the saves started since the server started
	// (rdb_saves: it moves when the fork is made, not when the save
	// ends).
	InProgress bool
	Saves      int64
	// LastSave is rdb_last_save_time: when the last successful save
	// ended (second resolution).
	LastSave time.Time
	// LastOK is rdb_last_bgsave_status:ok.
	LastOK bool
	// AOFRewriteInProgress: an AOF rewrite runs (a save asked for with
	// BGSAVE SCHEDULE starts after it).
	AOFRewriteInProgress bool
}

// ParseSaveState parses an INFO persistence answer (pure).
func ParseSaveState(info string) (SaveState, error) {
	f := infoFields(info)
	var s SaveState
	for _, k := range []string{"rdb_bgsave_in_progress", "rdb_saves", "rdb_last_save_time", "rdb_last_bgsave_status"} {
		if _, ok := f[k]; !ok {
			return s, fmt.Errorf("info persistence: no %s", k)
		}
	}
	s.Loading = f["loading"] == "1"
	s.InProgress = f["rdb_bgsave_in_progress"] == "1"
	s.LastOK = f["rdb_last_bgsave_status"] == "ok"
	s.AOFRewriteInProgress = f["aof_rewrite_in_progress"] == "1"
	n, err := strconv.ParseInt(f["rdb_saves"], 10, 64)
	if err != nil || n < 0 {
		return s, fmt.Errorf("info persistence: rdb_saves %q", f["rdb_saves"])
	}
	s.Saves = n
	t, err := strconv.ParseInt(f["rdb_last_save_time"], 10, 64)
	if err != nil || t < 0 {
		return s, fmt.Errorf("info persistence: rdb_last_save_time %q", f["rdb_last_save_time"])
	}
	s.LastSave = time.Unix(t, 0).UTC()
	return s, nil
}

// ReadSaveState reads INFO persistence of the server at ep.
func ReadSaveState(ctx context.Context, ep Endpoint) (SaveState, error) {
	c := redis.NewClient(MemberOptions(ep.Addr, ep.Password))
	defer c.Close()
	return clientSaveState(ctx, c, ep.Addr)
}

func clientSaveState(ctx context.Context, c *redis.Client, addr string) (SaveState, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	info, err := c.Info(ctx, "persistence").Result()
	if err != nil {
		return SaveState{}, fmt.Errorf("info persistence on %s: %w", addr, err)
	}
	s, err := ParseSaveState(info)
	if err != nil {
		return SaveState{}, fmt.Errorf("%s: %w", addr, err)
	}
	return s, nil
}

// SaveInfo is what a finished BGSave left.
type SaveInfo struct {
	// Before is the state read before our save was asked for; After the
	// state once it finished.
	Before, After SaveState
	// Waited: a save already running was waited for first (its snapshot
	// may predate writes the caller made; ours is the next one).
	Waited bool
	// Took is how long from our BGSAVE until it finished.
	Took time.Duration
}

// LastSave is when our save ended (rdb_last_save_time after it).
func (s SaveInfo) LastSave() time.Time { return s.After.LastSave }

// isSaveRunning reports BGSAVE's refusal while a save runs.
func isSaveRunning(err error) bool {
	return err != nil && strings.Contains(err.Error(), "already in progress")
}

// saveIdle is how long no save may run, while ours has not started and no
// AOF rewrite delays it, before BGSave counts ours as failed to start.
const saveIdle = 2 * time.Second

// BGSave makes the server at addr write a snapshot of its dataset to its
// RDB file and waits until it has, without blocking its clients: a save
// already running is waited for first (it may have forked before the
// caller's last writes), then BGSAVE SCHEDULE (an AOF rewrite running
// delays it, it does not refuse it), then INFO persistence every 50 ms
// until the save counter has passed ours and no save runs. A failed save
// (rdb_last_bgsave_status:err), one that never starts, and a server still
// loading its data are errors saying so. Bounded by ctx only: a large
// dataset takes as long as it takes.
func BGSave(ctx context.Context, addr, password string) (SaveInfo, error) {
	return BGSaveNotify(ctx, addr, password, nil)
}

// BGSaveNotify is BGSave that calls accepted (when not nil) once, as soon as
// the server accepted our BGSAVE and before waiting for the save: every
// RDB save that ends after that was forked after it (the server refuses
// BGSAVE while another save runs), so a caller watching the RDB file
// knows the next one renamed in place is ours, or a later one.
func BGSaveNotify(ctx context.Context, addr, password string, accepted func()) (SaveInfo, error) {
	c := redis.NewClient(MemberOptions(addr, password))
	defer c.Close()
	var out SaveInfo
	st, err := clientSaveState(ctx, c, addr)
	if err != nil {
		return out, err
	}
	var asked time.Time
	for {
		if st.Loading {
			return out, fmt.Errorf("BGSAVE on %s: it is still loading its data", addr)
		}
		if st.InProgress {
			out.Waited = true
			if st, err = pollSave(ctx, c, addr, func(s SaveState) (bool, error) { return !s.InProgress, nil }); err != nil {
				return out, err
			}
			continue
		}
		out.Before = st
		asked = time.Now()
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		err = c.Do(cctx, "BGSAVE", "SCHEDULE").Err()
		cancel()
		if isSaveRunning(err) { // another save forked since we looked
			if st, err = clientSaveState(ctx, c, addr); err != nil {
				return out, err
			}
			continue
		}
		if err != nil {
			return out, fmt.Errorf("BGSAVE on %s: %w", addr, err)
		}
		if accepted != nil {
			accepted()
		}
		break
	}
	var idleSince time.Time
	st, err = pollSave(ctx, c, addr, func(s SaveState) (bool, error) {
		switch {
		case s.Saves > out.Before.Saves && !s.InProgress:
			return true, nil
		case s.Saves > out.Before.Saves || s.InProgress || s.AOFRewriteInProgress:
			idleSince = time.Time{}
		case idleSince.IsZero():
			idleSince = time.Now()
		case time.Since(idleSince) > saveIdle:
			return false, fmt.Errorf("background save on %s did not start (rdb_last_bgsave_status:%s; see its log)", addr, okErr(s.LastOK))
		}
		return false, nil
	})
	if err != nil {
		return out, err
	}
	out.After, out.Took = st, time.Since(asked)
	if !st.LastOK {
		return out, fmt.Errorf("background save on %s failed (rdb_last_bgsave_status:err; see its log)", addr)
	}
	return out, nil
}

// pollSave reads INFO persistence every savePoll until done says so.
func pollSave(ctx context.Context, c *redis.Client, addr string, done func(SaveState) (bool, error)) (SaveState, error) {
	t := time.NewTicker(savePoll)
	defer t.Stop()
	for {
		st, err := clientSaveState(ctx, c, addr)
		if err != nil {
			return st, err
		}
		ok, err := done(st)
		if err != nil || ok {
			return st, err
		}
		select {
		case <-ctx.Done():
			return st, fmt.Errorf("background save on %s not finished: %w", addr, ctx.Err())
		case <-t.C:
		}
	}
}

// Keyspace is the key count of each database that holds keys (INFO
// keyspace: keys=N, which counts keys whose TTL passed but that the server
// has not deleted yet, as DBSIZE does).
type Keyspace map[int]int64

// Total is the key count over every database.
func (k Keyspace) Total() int64 {
	var n int64
	for _, c := range k {
		n += c
	}
	return n
}

// DBs are the databases that hold keys, in order.
func (k Keyspace) DBs() []int {
	out := make([]int, 0, len(k))
	for db, n := range k {
		if n > 0 {
			out = append(out, db)
		}
	}
	slices.Sort(out)
	return out
}

// ParseKeyspace parses an INFO keyspace answer (pure).
func ParseKeyspace(info string) (Keyspace, error) {
	out := Keyspace{}
	for k, v := range infoFields(info) {
		if !strings.HasPrefix(k, "db") || !isDigits(k[2:]) {
			continue
		}
		db, err := strconv.Atoi(k[2:])
		if err != nil {
			return nil, fmt.Errorf("info keyspace: %s", k)
		}
		found := false
		for _, kv := range strings.Split(v, ",") {
			if c, ok := strings.CutPrefix(kv, "keys="); ok {
				n, err := strconv.ParseInt(c, 10, 64)
				if err != nil || n < 0 {
					return nil, fmt.Errorf("info keyspace: %s: keys %q", k, c)
				}
				out[db], found = n, true
			}
		}
		if !found {
			return nil, fmt.Errorf("info keyspace: %s: no keys=", k)
		}
	}
	return out, nil
}

// ReadKeyspace reads the key count of every database of the server at ep
// (one INFO keyspace: the databases are read at the same instant).
func ReadKeyspace(ctx context.Context, ep Endpoint) (Keyspace, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	c := redis.NewClient(MemberOptions(ep.Addr, ep.Password))
	defer c.Close()
	info, err := c.Info(ctx, "keyspace").Result()
	if err != nil {
		return nil, fmt.Errorf("info keyspace on %s: %w", ep.Addr, err)
	}
	k, err := ParseKeyspace(info)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ep.Addr, err)
	}
	return k, nil
}

// WaitLoaded waits until the server at ep answers PING and INFO
// persistence says loading:0 (a server loading its RDB or AOF answers
// -LOADING), polling every 50 ms until ctx ends.
func WaitLoaded(ctx context.Context, ep Endpoint) error {
	c := redis.NewClient(MemberOptions(ep.Addr, ep.Password))
	defer c.Close()
	t := time.NewTicker(savePoll)
	defer t.Stop()
	for {
		st, err := clientSaveState(ctx, c, ep.Addr)
		if err == nil && !st.Loading {
			return nil
		}
		if err == nil {
			err = errors.New("loading:1")
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s has not loaded its data: %w (last: %v)", ep.Addr, ctx.Err(), err)
		case <-t.C:
		}
	}
}

// KeySample is one key and a digest of its value, as a backup's restore
// drill checks it.
type KeySample struct {
	DB  int    `json:"db"`
	Key string `json:"key"`
	// Digest is the SHA-256 (hex) of the value's canonical form
	// (ValueDigest); "" when the key is missing, expired, of a type the
	// sample does not read, or larger than the sample's bounds.
	Digest string `json:"digest"`
}

// Canonical value forms. Each value is hashed as its type, then its parts,
// each length-prefixed: a list, a sorted set (by score, then member) and a
// stream (by id) in their order; a set's members and a hash's field/value
// pairs sorted, since their order depends on the server's hash seed and
// encoding. Two servers holding the same value give the same digest, what
// DUMP's payload does not promise (encodings and iteration order differ
// after a reload).
type digester struct{ h hash.Hash }

func newDigester(typ string) *digester {
	d := &digester{h: sha256.New()}
	d.part(typ)
	return d
}

func (d *digester) part(s string) {
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(s)))
	d.h.Write(n[:])
	d.h.Write([]byte(s))
}

// tree hashes a nested reply (a stream's entries) with its shape.
func (d *digester) tree(v any) error {
	switch x := v.(type) {
	case string:
		d.part("s")
		d.part(x)
	case int64:
		d.part("i")
		d.part(strconv.FormatInt(x, 10))
	case nil:
		d.part("n")
	case []any:
		d.part("a" + strconv.Itoa(len(x)))
		for _, e := range x {
			if err := d.tree(e); err != nil {
				return err
			}
		}
	default:
		return fmt.Errorf("unexpected reply %T", v)
	}
	return nil
}

func (d *digester) sum() string { return hex.EncodeToString(d.h.Sum(nil)) }

// ValueDigest is the digest of a value of type typ read as the reply of
// the command readCommand(typ) names (pure): a string's bytes, a list's or
// sorted set's flat reply in order, a set's members or a hash's
// field/value pairs sorted, a stream's entries in order.
func ValueDigest(typ string, reply any) (string, error) {
	d := newDigester(typ)
	switch typ {
	case "string":
		s, ok := reply.(string)
		if !ok {
			return "", fmt.Errorf("string: reply %T", reply)
		}
		d.part(s)
	case "list", "zset":
		parts, err := strs(reply)
		if err != nil {
			return "", fmt.Errorf("%s: %w", typ, err)
		}
		for _, p := range parts {
			d.part(p)
		}
	case "set":
		parts, err := strs(reply)
		if err != nil {
			return "", fmt.Errorf("set: %w", err)
		}
		slices.Sort(parts)
		for _, p := range parts {
			d.part(p)
		}
	case "hash":
		parts, err := strs(reply)
		if err != nil || len(parts)%2 != 0 {
			return "", fmt.Errorf("hash: %d parts, %v", len(parts), err)
		}
		pairs := make([][2]string, 0, len(parts)/2)
		for i := 0; i < len(parts); i += 2 {
			pairs = append(pairs, [2]string{parts[i], parts[i+1]})
		}
		slices.SortFunc(pairs, func(a, b [2]string) int { return strings.Compare(a[0], b[0]) })
		for _, p := range pairs {
			d.part(p[0])
			d.part(p[1])
		}
	case "stream":
		if err := d.tree(reply); err != nil {
			return "", fmt.Errorf("stream: %w", err)
		}
	default:
		return "", fmt.Errorf("type %q is not sampled", typ)
	}
	return d.sum(), nil
}

func strs(v any) ([]string, error) {
	a, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("reply %T, want an array", v)
	}
	out := make([]string, len(a))
	for i, e := range a {
		s, ok := e.(string)
		if !ok {
			return nil, fmt.Errorf("element %T, want a string", e)
		}
		out[i] = s
	}
	return out, nil
}

// sizeCommand is the command that measures a value of type typ (STRLEN,
// LLEN, …), readCommand the one that reads it whole; nil for a type the
// sample does not read (module types).
func sizeCommand(typ, key string) []any {
	switch typ {
	case "string":
		return []any{"STRLEN", key}
	case "list":
		return []any{"LLEN", key}
	case "set":
		return []any{"SCARD", key}
	case "hash":
		return []any{"HLEN", key}
	case "zset":
		return []any{"ZCARD", key}
	case "stream":
		return []any{"XLEN", key}
	}
	return nil
}

func readCommand(typ, key string) []any {
	switch typ {
	case "string":
		return []any{"GET", key}
	case "list":
		return []any{"LRANGE", key, 0, -1}
	case "set":
		return []any{"SMEMBERS", key}
	case "hash":
		return []any{"HGETALL", key}
	case "zset":
		return []any{"ZRANGE", key, 0, -1, "WITHSCORES"}
	case "stream":
		return []any{"XRANGE", key, "-", "+"}
	}
	return nil
}

// withinBounds reports whether a value of type typ and size n may be
// sampled.
func withinBounds(typ string, n int64) bool {
	if typ == "string" {
		return n <= SampleMaxBytes
	}
	return n <= SampleMaxElements
}

// sampleConn is one connection selecting databases in turn.
type sampleConn struct {
	c    *redis.Client
	conn *redis.Conn
	addr string
	db   int
}

func newSampleConn(ep Endpoint) *sampleConn {
	c := redis.NewClient(MemberOptions(ep.Addr, ep.Password))
	return &sampleConn{c: c, conn: c.Conn(), addr: ep.Addr, db: -1}
}

func (s *sampleConn) close() {
	s.conn.Close()
	s.c.Close()
}

func (s *sampleConn) do(ctx context.Context, db int, args ...any) (any, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	if db != s.db {
		if err := s.conn.Select(ctx, db).Err(); err != nil {
			return nil, fmt.Errorf("select %d on %s: %w", db, s.addr, err)
		}
		s.db = db
	}
	v, err := s.conn.Do(ctx, args...).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("%s on %s (db %d): %w", args[0], s.addr, db, err)
	}
	return v, nil
}

// digest reads one key: its digest, or "" when it is missing, expires
// within SampleMinTTL, is of a type not sampled or is over the bounds.
func (s *sampleConn) digest(ctx context.Context, db int, key string) (string, error) {
	v, err := s.do(ctx, db, "PTTL", key)
	if err != nil {
		return "", err
	}
	if ttl, _ := v.(int64); ttl == -2 || (ttl >= 0 && time.Duration(ttl)*time.Millisecond < SampleMinTTL) {
		return "", nil
	}
	v, err = s.do(ctx, db, "TYPE", key)
	if err != nil {
		return "", err
	}
	typ, _ := v.(string)
	size := sizeCommand(typ, key)
	if size == nil {
		return "", nil
	}
	if v, err = s.do(ctx, db, size...); err != nil {
		return "", err
	}
	if n, _ := v.(int64); !withinBounds(typ, n) {
		return "", nil
	}
	if v, err = s.do(ctx, db, readCommand(typ, key)...); err != nil {
		return "", err
	}
	if v == nil { // gone since TYPE
		return "", nil
	}
	d, err := ValueDigest(typ, v)
	if err != nil {
		return "", fmt.Errorf("digest of a %s in db %d on %s: %w", typ, db, s.addr, err)
	}
	return d, nil
}

// SampleQuota splits n samples over the databases of k in proportion to
// their key counts (rounded down), at least one per database that holds
// keys, never more than it holds (pure).
func SampleQuota(k Keyspace, n int) map[int]int {
	out := map[int]int{}
	total := k.Total()
	if n <= 0 || total == 0 {
		return out
	}
	for _, db := range k.DBs() {
		q := int(int64(n) * k[db] / total)
		q = max(1, min(q, int(min(k[db], int64(n)))))
		out[db] = q
	}
	return out
}

// SampleKeys picks up to n distinct keys of the server at ep at random
// (RANDOMKEY, in each database in proportion to its keys) among those it
// can sample (see KeySample) and reads their digests. Fewer than n come
// back when the dataset holds fewer such keys.
func SampleKeys(ctx context.Context, ep Endpoint, n int) ([]KeySample, error) {
	k, err := ReadKeyspace(ctx, ep)
	if err != nil {
		return nil, err
	}
	s := newSampleConn(ep)
	defer s.close()
	var out []KeySample
	quota := SampleQuota(k, n)
	for _, db := range k.DBs() {
		want := quota[db]
		seen := map[string]bool{}
		got := 0
		for try := 0; try < 4*want && got < want; try++ {
			v, err := s.do(ctx, db, "RANDOMKEY")
			if err != nil {
				return nil, err
			}
			key, _ := v.(string)
			if v == nil || seen[key] {
				continue
			}
			seen[key] = true
			d, err := s.digest(ctx, db, key)
			if err != nil {
				return nil, err
			}
			if d != "" {
				out = append(out, KeySample{DB: db, Key: key, Digest: d})
				got++
			}
		}
	}
	return out, nil
}

// DigestKeys reads the current digest of each of keys on the server at ep
// (Digest "" for a key missing or no longer sampleable); the input's
// digests are ignored.
func DigestKeys(ctx context.Context, ep Endpoint, keys []KeySample) ([]KeySample, error) {
	s := newSampleConn(ep)
	defer s.close()
	out := make([]KeySample, len(keys))
	for i, k := range keys {
		d, err := s.digest(ctx, k.DB, k.Key)
		if err != nil {
			return nil, err
		}
		out[i] = KeySample{DB: k.DB, Key: k.Key, Digest: d}
	}
	return out, nil
}

// Unchanged returns the samples of before whose digest is the same, and
// not empty, in after (pure): keys not written between the two reads, as
// far as a digest tells.
func Unchanged(before, after []KeySample) []KeySample {
	now := map[[2]string]string{}
	for _, k := range after {
		now[[2]string{strconv.Itoa(k.DB), k.Key}] = k.Digest
	}
	var out []KeySample
	for _, k := range before {
		if d := now[[2]string{strconv.Itoa(k.DB), k.Key}]; k.Digest != "" && d == k.Digest {
			out = append(out, k)
		}
	}
	return out
}

// CopyStats is what CopyKeys did.
type CopyStats struct {
	// Copied keys, per database and in all.
	Copied map[int]int64
	Total  int64
	// Skipped keys vanished or expired between SCAN and DUMP.
	Skipped int64
	// Flushed: the target's dataset was replaced (FLUSHALL sent). False
	// when CopyKeys failed before it: the target is untouched.
	Flushed bool
}

// copyClient is a client for bulk work: longer I/O bounds than a probe,
// the ctx's deadline and cancellation honoured on the socket.
func copyClient(ep Endpoint) *redis.Client {
	o := MemberOptions(ep.Addr, ep.Password)
	o.ReadTimeout, o.WriteTimeout = copyIOTimeout, copyIOTimeout
	o.ContextTimeoutEnabled = true
	return redis.NewClient(o)
}

// CopyKeys replaces the dataset of the server at to by the one of the
// server at from: FLUSHALL ASYNC on to (the keyspace is empty at once, the
// memory is freed in the background, so the server stays responsive and a
// Sentinel watching it never sees it busy), then, for each database that
// holds keys on from, SCAN it and move each page with two pipelined round
// trips: DUMP and PTTL of up to batch keys on from, RESTORE key ttl
// payload REPLACE of them on to. A key expired or gone between SCAN and
// DUMP is skipped; a key's remaining TTL is kept. Memory is bounded by one
// batch of values, not by the dataset. Replicas of to follow through
// replication. batch ≤ 0 means DefaultCopyBatch.
//
// from must be a server nobody writes to (a scratch server loaded from a
// backup): SCAN guarantees every key present for the whole scan is seen,
// not a snapshot of a changing dataset. to must be a primary (FLUSHALL
// and RESTORE on a replica fail with READONLY, before anything changed),
// of an engine that reads from's DUMP payloads (the same engine version or
// a later one). Errors name the server, database and command, never a key
// or a value.
func CopyKeys(ctx context.Context, from, to Endpoint, batch int) (CopyStats, error) {
	st := CopyStats{Copied: map[int]int64{}}
	if from.Addr == to.Addr {
		return st, fmt.Errorf("copy keys: source and target are both %s", to.Addr)
	}
	if batch <= 0 {
		batch = DefaultCopyBatch
	}
	k, err := ReadKeyspace(ctx, from)
	if err != nil {
		return st, fmt.Errorf("copy keys: %w", err)
	}
	src, dst := copyClient(from), copyClient(to)
	defer src.Close()
	defer dst.Close()
	if err := dst.Do(ctx, "FLUSHALL", "ASYNC").Err(); err != nil {
		return st, fmt.Errorf("copy keys: FLUSHALL ASYNC on %s: %w", to.Addr, err)
	}
	st.Flushed = true
	for _, db := range k.DBs() {
		if err := copyDB(ctx, src, dst, from.Addr, to.Addr, db, batch, &st); err != nil {
			return st, fmt.Errorf("copy keys: %w", err)
		}
	}
	return st, nil
}

func copyDB(ctx context.Context, src, dst *redis.Client, fromAddr, toAddr string, db, batch int, st *CopyStats) error {
	sc, dc := src.Conn(), dst.Conn()
	defer sc.Close()
	defer dc.Close()
	if err := sc.Select(ctx, db).Err(); err != nil {
		return fmt.Errorf("select %d on %s: %w", db, fromAddr, err)
	}
	if err := dc.Select(ctx, db).Err(); err != nil {
		return fmt.Errorf("select %d on %s: %w", db, toAddr, err)
	}
	var cursor uint64
	for {
		keys, next, err := sc.Scan(ctx, cursor, "", int64(batch)).Result()
		if err != nil {
			return fmt.Errorf("scan db %d on %s: %w", db, fromAddr, err)
		}
		for len(keys) > 0 {
			n := min(batch, len(keys))
			if err := copyBatch(ctx, sc, dc, fromAddr, toAddr, db, keys[:n], st); err != nil {
				return err
			}
			keys = keys[n:]
		}
		if next == 0 {
			return nil
		}
		cursor = next
	}
}

// RestoreTTL is the RESTORE ttl argument for a PTTL answer (pure): 0 (no
// expiry) for -1, the remaining milliseconds otherwise, at least 1 so a
// key about to expire is not made persistent; ok false for -2 (gone).
func RestoreTTL(pttl int64) (ttl int64, ok bool) {
	switch {
	case pttl == -2:
		return 0, false
	case pttl < 0:
		return 0, true
	case pttl == 0:
		return 1, true
	}
	return pttl, true
}

func copyBatch(ctx context.Context, sc, dc *redis.Conn, fromAddr, toAddr string, db int, keys []string, st *CopyStats) error {
	dumps := make([]*redis.Cmd, len(keys))
	pttls := make([]*redis.Cmd, len(keys))
	// Each command's own error is checked below: Pipelined's is the first
	// one, which may be DUMP's nil for a key gone since SCAN.
	_, err := sc.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, k := range keys {
			dumps[i] = p.Do(ctx, "DUMP", k)
			pttls[i] = p.Do(ctx, "PTTL", k)
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) && ctx.Err() != nil {
		return fmt.Errorf("DUMP/PTTL in db %d on %s: %w", db, fromAddr, err)
	}
	type restore struct {
		key     string
		ttl     int64
		payload string
	}
	todo := make([]restore, 0, len(keys))
	for i, k := range keys {
		payload, err := dumps[i].Text()
		if errors.Is(err, redis.Nil) {
			st.Skipped++
			continue
		}
		if err != nil {
			return fmt.Errorf("DUMP in db %d on %s: %w", db, fromAddr, err)
		}
		pttl, err := pttls[i].Int64()
		if err != nil {
			return fmt.Errorf("PTTL in db %d on %s: %w", db, fromAddr, err)
		}
		ttl, ok := RestoreTTL(pttl)
		if !ok {
			st.Skipped++
			continue
		}
		todo = append(todo, restore{k, ttl, payload})
	}
	restores := make([]*redis.Cmd, len(todo))
	_, err = dc.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, r := range todo {
			restores[i] = p.Do(ctx, "RESTORE", r.key, r.ttl, r.payload, "REPLACE")
		}
		return nil
	})
	if err != nil && ctx.Err() != nil {
		return fmt.Errorf("RESTORE in db %d on %s: %w", db, toAddr, err)
	}
	for _, r := range restores {
		if err := r.Err(); err != nil {
			return fmt.Errorf("RESTORE in db %d on %s: %w", db, toAddr, err)
		}
	}
	n := int64(len(restores))
	st.Copied[db] += n
	st.Total += n
	return nil
}
