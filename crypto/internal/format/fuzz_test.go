package format

import (
	"bytes"
	"encoding/binary"
	"testing"
)

func seedHeader() []byte {
	body := make([]byte, TinkAEADBodyLen)
	body[0] = 1
	binary.BigEndian.PutUint32(body[1:5], 42)
	hp := make([]byte, HPKEBodyLen)
	hp[0] = 1
	binary.BigEndian.PutUint32(hp[1:5], 7)
	h := &Header{Version: 1, Suite: 1, ExportID: "e1", Path: "Patient.ndjson", Stanzas: []Stanza{
		{Type: TypeTinkAEAD, KeyID: 42, Body: body},
		{Type: TypeHPKE, Role: RoleEscrow, KeyID: 7, Body: hp},
		{Type: TypeKMS, Locator: "aws-kms://arn:aws:kms:eu-west-1:1:key/k", Body: []byte("ciphertext")},
	}}
	b, err := h.Marshal()
	if err != nil {
		panic(err)
	}
	return b
}

// FuzzParse: no panics, bounded reads, and every accepted header re-encodes
// to exactly the bytes it was parsed from.
func FuzzParse(f *testing.F) {
	f.Add(seedHeader())
	f.Add([]byte(Magic))
	f.Add(append(seedHeader(), 1, 2, 3))
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bytes.NewReader(b)
		h, raw, err := Parse(r, DefaultLimits)
		if err != nil {
			if _, ok := err.(*Error); !ok {
				t.Fatalf("unclassified error %v", err)
			}
			return
		}
		if !bytes.Equal(raw, b[:len(raw)]) {
			t.Fatal("raw bytes are not a prefix of the input")
		}
		re, err := h.Marshal()
		if err != nil {
			t.Fatalf("accepted header does not re-encode: %v", err)
		}
		if !bytes.Equal(re, raw) {
			t.Fatalf("re-encoding differs:\n%x\n%x", re, raw)
		}
	})
}

func TestSizes(t *testing.T) {
	for _, n := range []int64{0, 1, FirstSegmentPlain - 1, FirstSegmentPlain, FirstSegmentPlain + 1, FirstSegmentPlain + SegmentPlain, FirstSegmentPlain + 256*SegmentPlain + 1} {
		got, segs, ok := PlaintextLen(PayloadLen(n))
		if !ok || got != n || segs != Segments(n) {
			t.Fatalf("n=%d: got %d %d %v", n, got, segs, ok)
		}
	}
	for _, bad := range []int64{0, 39, 40 + 15, StreamHeaderLen + SegmentSize - StreamHeaderLen + 16} {
		if _, _, ok := PlaintextLen(bad); ok {
			t.Fatalf("payload length %d accepted", bad)
		}
	}
}
