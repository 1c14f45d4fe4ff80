package fhir

import (
	"bytes"
	"container/heap"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"os"
	"slices"
)

// The Checker's export-wide index of Type/id keys is exact and bounded in
// memory. Up to CheckerOptions.IndexEntries defined ids and pending
// references live in maps; past that, both are written out as runs sorted
// by key to one temporary file, and the maps start again. Duplicate ids
// are still found at once: a lookup that misses the maps asks a Bloom filter
// of the spilled top-level ids, and only on a "maybe" reads the one chunk of
// each run that could hold the key. Finish resolves the pending references
// against every defined id by a k-way merge of the sorted runs.
//
// Nothing in the file is readable without the process's memory: keys are
// SHA-256 of a per-Checker random key and "Type/id", and every chunk is
// sealed with AES-256-GCM under a second per-Checker random key. The file
// is unlinked as soon as it is created, so a crash leaves nothing behind.
//
// Collisions: two different Type/ids share a 128-bit keyed hash with
// probability about n²/2¹²⁹ for n ids (below 10⁻²⁴ for a billion), the same
// bound the in-memory index always had.

// DefaultIndexEntries is how many ids and pending references the Checker
// holds in memory before spilling (about 6-8 MB of maps).
const DefaultIndexEntries = 1 << 16

const (
	bloomBits   = 1 << 24 // 2 MiB: a false "maybe" for ~0.2% of lookups at 1M spilled ids
	bloomProbes = 5
	chunkTarget = 16 << 10 // plaintext bytes per sealed chunk: what a probe reads
	defRecSize  = 16 + 16 + 4 + 4 + 1
	refRecHead  = 16 + 8 + 4*5
)

type spill struct {
	f      *os.File
	off    int64
	aead   cipher.AEAD
	chunks uint64 // sealed so far: the nonce counter
	defs   []*run
	refs   []*run
	bloom  []uint64
	buf    []byte // a decrypted chunk (probe and merge scratch)
}

// chunk is one sealed chunk of a run: where it is and its first key.
type chunk struct {
	off   int64
	n     int
	nonce uint64
	first [16]byte
}

type run struct{ chunks []chunk }

func newSpill(dir string) (*spill, error) {
	if dir == "" {
		dir = os.TempDir()
	}
	var key [32]byte
	if _, err := rand.Read(key[:]); err != nil {
		return nil, err
	}
	b, err := aes.NewCipher(key[:])
	if err != nil {
		return nil, err
	}
	a, err := cipher.NewGCM(b)
	if err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(dir, "ehrport-index-*")
	if err != nil {
		return nil, fmt.Errorf("id index: spilling to the temporary folder: %w", err)
	}
	_ = os.Remove(f.Name()) // unlinked at once: a crash leaves nothing behind
	return &spill{f: f, aead: a, bloom: make([]uint64, bloomBits/64)}, nil
}

func (s *spill) close() {
	if s != nil && s.f != nil {
		s.f.Close()
		s.f = nil
	}
}

func (s *spill) nonce(n uint64) []byte {
	var b [12]byte
	binary.LittleEndian.PutUint64(b[:], n)
	return b[:]
}

// runWriter seals records of one run into chunks that never split a record.
type runWriter struct {
	s     *spill
	r     *run
	plain []byte
	ct    []byte
	first [16]byte
	err   error
}

func (s *spill) newRun() *runWriter {
	return &runWriter{s: s, r: &run{}, plain: make([]byte, 0, chunkTarget+256)}
}

func (w *runWriter) add(k [16]byte, rec []byte) {
	if len(w.plain) > 0 && len(w.plain)+len(rec) > chunkTarget {
		w.flush()
	}
	if len(w.plain) == 0 {
		w.first = k
	}
	w.plain = append(w.plain, rec...)
}

func (w *runWriter) flush() {
	if len(w.plain) == 0 || w.err != nil {
		w.plain = w.plain[:0]
		return
	}
	s := w.s
	n := s.chunks
	s.chunks++
	ct := s.aead.Seal(w.ct[:0], s.nonce(n), w.plain, nil)
	w.ct = ct
	if _, err := s.f.WriteAt(ct, s.off); err != nil {
		w.err = fmt.Errorf("id index: writing to the temporary folder: %w", err)
	}
	w.r.chunks = append(w.r.chunks, chunk{off: s.off, n: len(ct), nonce: n, first: w.first})
	s.off += int64(len(ct))
	w.plain = w.plain[:0]
}

func (w *runWriter) done() (*run, error) {
	w.flush()
	return w.r, w.err
}

// read decrypts chunk c into s.buf (or buf, when given) and returns the
// plaintext.
func (s *spill) read(c chunk, buf []byte) ([]byte, error) {
	buf = slices.Grow(buf[:0], c.n)[:c.n]
	if _, err := s.f.ReadAt(buf, c.off); err != nil {
		return nil, fmt.Errorf("id index: reading back the temporary file: %w", err)
	}
	p, err := s.aead.Open(buf[:0], s.nonce(c.nonce), buf, nil)
	if err != nil {
		return nil, fmt.Errorf("id index: the temporary file changed under the export: %w", err)
	}
	return p, nil
}

func bloomIndexes(k [16]byte) (h1, h2 uint64) {
	return binary.LittleEndian.Uint64(k[:8]), binary.LittleEndian.Uint64(k[8:]) | 1
}

func (s *spill) bloomAdd(k [16]byte) {
	h1, h2 := bloomIndexes(k)
	for i := uint64(0); i < bloomProbes; i++ {
		b := (h1 + i*h2) % bloomBits
		s.bloom[b/64] |= 1 << (b % 64)
	}
}

func (s *spill) bloomHas(k [16]byte) bool {
	h1, h2 := bloomIndexes(k)
	for i := uint64(0); i < bloomProbes; i++ {
		b := (h1 + i*h2) % bloomBits
		if s.bloom[b/64]&(1<<(b%64)) == 0 {
			return false
		}
	}
	return true
}

func putDef(b []byte, k [16]byte, r idRec) []byte {
	b = append(b, k[:]...)
	b = append(b, r.sum[:]...)
	b = binary.LittleEndian.AppendUint32(b, r.file)
	b = binary.LittleEndian.AppendUint32(b, r.at)
	return append(b, r.kind)
}

func getDef(b []byte) (k [16]byte, r idRec) {
	copy(k[:], b[:16])
	copy(r.sum[:], b[16:32])
	r.file = binary.LittleEndian.Uint32(b[32:])
	r.at = binary.LittleEndian.Uint32(b[36:])
	r.kind = b[40]
	return k, r
}

func putRef(b []byte, k [16]byte, p pendingRef) []byte {
	b = append(b, k[:]...)
	b = binary.LittleEndian.AppendUint64(b, p.seq)
	for _, v := range [...]uint32{p.file, p.at, p.count, uint32(len(p.ref)), uint32(len(p.path))} {
		b = binary.LittleEndian.AppendUint32(b, v)
	}
	return append(append(b, p.ref...), p.path...)
}

// getRef decodes one reference record and returns the rest of b.
func getRef(b []byte) (k [16]byte, p pendingRef, rest []byte) {
	copy(k[:], b[:16])
	p.seq = binary.LittleEndian.Uint64(b[16:])
	p.file = binary.LittleEndian.Uint32(b[24:])
	p.at = binary.LittleEndian.Uint32(b[28:])
	p.count = binary.LittleEndian.Uint32(b[32:])
	nr := int(binary.LittleEndian.Uint32(b[36:]))
	np := int(binary.LittleEndian.Uint32(b[40:]))
	b = b[refRecHead:]
	p.ref, p.path = string(b[:nr]), string(b[nr:nr+np])
	return k, p, b[nr+np:]
}

func sortedKeys[V any](m map[[16]byte]V) [][16]byte {
	keys := make([][16]byte, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b [16]byte) int { return bytes.Compare(a[:], b[:]) })
	return keys
}

// spillIDs writes the in-memory ids as one sorted run and adds the
// top-level ones to the Bloom filter.
func (s *spill) spillIDs(ids map[[16]byte]idRec) error {
	for k, r := range ids {
		if r.kind == idTop {
			s.bloomAdd(k)
		}
	}
	return spillRun(s, &s.defs, ids, putDef)
}

// spillRefs writes the in-memory pending references as one sorted run.
func (s *spill) spillRefs(pending map[[16]byte]pendingRef) error {
	return spillRun(s, &s.refs, pending, putRef)
}

// spillRun writes m's records in key order as one run and adds it to runs.
func spillRun[V any](s *spill, runs *[]*run, m map[[16]byte]V, put func([]byte, [16]byte, V) []byte) error {
	if len(m) == 0 {
		return nil
	}
	w := s.newRun()
	var rec []byte
	for _, k := range sortedKeys(m) {
		rec = put(rec[:0], k, m[k])
		w.add(k, rec)
	}
	r, err := w.done()
	if err != nil {
		return err
	}
	*runs = append(*runs, r)
	return nil
}

// topID looks k up among the spilled top-level ids. A key is top-level in
// at most one run (a second top-level use is a duplicate and never stored).
func (s *spill) topID(k [16]byte) (idRec, bool, error) {
	if !s.bloomHas(k) {
		return idRec{}, false, nil
	}
	for _, r := range s.defs {
		i, _ := slices.BinarySearchFunc(r.chunks, k, func(c chunk, k [16]byte) int {
			return bytes.Compare(c.first[:], k[:])
		})
		// i is the first chunk starting at or after k: k is in chunk i if
		// it starts with k, else in the chunk before.
		if i == len(r.chunks) || r.chunks[i].first != k {
			i--
		}
		if i < 0 {
			continue
		}
		p, err := s.read(r.chunks[i], s.buf)
		if err != nil {
			return idRec{}, false, err
		}
		s.buf = p[:0]
		n := len(p) / defRecSize
		lo, hi := 0, n
		for lo < hi {
			m := int(uint(lo+hi) >> 1)
			if bytes.Compare(p[m*defRecSize:m*defRecSize+16], k[:]) < 0 {
				lo = m + 1
			} else {
				hi = m
			}
		}
		if lo < n {
			if rk, rec := getDef(p[lo*defRecSize:]); rk == k && rec.kind == idTop {
				return rec, true, nil
			}
		}
	}
	return idRec{}, false, nil
}

// cursor reads one run's records in key order.
type cursor struct {
	s    *spill
	r    *run
	next int    // next chunk
	p    []byte // rest of the current chunk
	buf  []byte
	key  [16]byte
	def  idRec
	ref  pendingRef
	refs bool
}

func (c *cursor) advance() (bool, error) {
	for len(c.p) == 0 {
		if c.next == len(c.r.chunks) {
			return false, nil
		}
		p, err := c.s.read(c.r.chunks[c.next], c.buf)
		if err != nil {
			return false, err
		}
		c.buf, c.p = p[:0], p
		c.next++
	}
	if c.refs {
		c.key, c.ref, c.p = getRef(c.p)
	} else {
		c.key, c.def = getDef(c.p)
		c.p = c.p[defRecSize:]
	}
	return true, nil
}

// merger yields the records of several runs in key order.
type merger []*cursor

func (m merger) Len() int           { return len(m) }
func (m merger) Less(i, j int) bool { return bytes.Compare(m[i].key[:], m[j].key[:]) < 0 }
func (m merger) Swap(i, j int)      { m[i], m[j] = m[j], m[i] }
func (m *merger) Push(x any)        { *m = append(*m, x.(*cursor)) }
func (m *merger) Pop() any {
	old := *m
	c := old[len(old)-1]
	*m = old[:len(old)-1]
	return c
}

func (s *spill) merge(runs []*run, refs bool) (*merger, error) {
	m := &merger{}
	for _, r := range runs {
		c := &cursor{s: s, r: r, refs: refs}
		ok, err := c.advance()
		if err != nil {
			return nil, err
		}
		if ok {
			*m = append(*m, c)
		}
	}
	heap.Init(m)
	return m, nil
}

// pop moves the smallest cursor on; the caller has read its record.
func (m *merger) pop() error {
	c := (*m)[0]
	ok, err := c.advance()
	if err != nil {
		return err
	}
	if ok {
		heap.Fix(m, 0)
	} else {
		heap.Pop(m)
	}
	return nil
}

// unresolved merges every spilled reference with every spilled id and
// passes to found the first use of each target no id matches, with the
// count of references to it summed over the runs.
func (s *spill) unresolved(found func(pendingRef)) error {
	refs, err := s.merge(s.refs, true)
	if err != nil {
		return err
	}
	defs, err := s.merge(s.defs, false)
	if err != nil {
		return err
	}
	for refs.Len() > 0 {
		k := (*refs)[0].key
		first := (*refs)[0].ref
		first.count = 0
		for refs.Len() > 0 && (*refs)[0].key == k {
			p := (*refs)[0].ref
			if p.seq < first.seq {
				first.ref, first.seq, first.file, first.at, first.path = p.ref, p.seq, p.file, p.at, p.path
			}
			first.count += p.count
			if err := refs.pop(); err != nil {
				return err
			}
		}
		for defs.Len() > 0 && bytes.Compare((*defs)[0].key[:], k[:]) < 0 {
			if err := defs.pop(); err != nil {
				return err
			}
		}
		if defs.Len() == 0 || (*defs)[0].key != k {
			found(first)
		}
	}
	return nil
}

// idKey is the index's key for a Type/id (or any reference text): 128 bits
// of SHA-256 over the Checker's random key and the text.
func (c *Checker) idKey(typeID string) [16]byte {
	c.hbuf = append(append(c.hbuf[:0], c.hkey[:]...), typeID...)
	s := sha256.Sum256(c.hbuf)
	var k [16]byte
	copy(k[:], s[:16])
	return k
}
