package storage_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/ehrport/ehrport/storage"
	"github.com/ehrport/ehrport/storage/storetest"
)

// lyingCloud is a store on a fresh lying cloud (storetest.LyingCloud):
// a cloud that says yes to everything, which the copy engine must not believe.
func lyingCloud(t testing.TB, partSize int64) *storage.S3Store {
	t.Helper()
	return storetest.LyingCloud(t, "lying-bucket", "exports", partSize)
}

func randomBytes(seed uint64, n int64) []byte {
	b := make([]byte, n)
	rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), 42}).Read(b)
	return b
}

func readAll(t testing.TB, st storage.Store, key string) []byte {
	t.Helper()
	rc, err := st.Get(context.Background(), key)
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read %s: %v", key, err)
	}
	return b
}

// What the lying cloud really stores, measured: sizes sent through
// S3Store.Put (with the right SHA-256) against sizes read back. The test
// asserts today's behaviour so a change in gofakes3 shows up here.
func TestLyingCloudMeasured(t *testing.T) {
	const part = 5 << 20
	liar := lyingCloud(t, part)
	ctx := context.Background()
	// An empty PUT is refused (MissingContentLength): minio-go sends no
	// Content-Length for an empty body, which real servers accept.
	empty := sha256.Sum256(nil)
	if err := liar.Put(ctx, "measure/0", bytes.NewReader(nil), 0, storage.PutOptions{SHA256: empty[:]}); err == nil {
		t.Log("gofakes3 now accepts empty objects")
	} else {
		t.Logf("sent         0 bytes: refused: %v", err)
	}
	for _, n := range []int64{1, 4096, part, part + 1, 12 << 20} {
		body := randomBytes(uint64(n), n)
		sum := sha256.Sum256(body)
		key := fmt.Sprintf("measure/%d", n)
		if err := liar.Put(ctx, key, bytes.NewReader(body), n, storage.PutOptions{SHA256: sum[:]}); err != nil {
			t.Fatalf("put %d: %v", n, err)
		}
		got := readAll(t, liar, key)
		oi, err := liar.Stat(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		same := bytes.Equal(got, body)
		t.Logf("sent %9d bytes: stored %9d (stat %9d), identical=%v", n, len(got), oi.Size, same)
		multipart := n > part
		if multipart == same {
			t.Errorf("%d bytes: identical=%v; expected gofakes3 to corrupt exactly the multipart uploads", n, same)
		}
		if multipart && !strings.Contains(string(got[:100]), ";chunk-signature=") {
			t.Errorf("%d bytes: stored data does not start with aws-chunked framing: %q", n, got[:60])
		}
	}
}

// (a) The capability probe sees through it: a PUT with a wrong checksum is
// stored, so VerifiesChecksums is false and copies are proven by read-back.
func TestLyingCloudCheck(t *testing.T) {
	liar := lyingCloud(t, 5<<20)
	caps, err := storage.Check(context.Background(), liar, storage.CheckOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if caps.VerifiesChecksums {
		t.Fatal("Check says gofakes3 verifies checksums; it stores a PUT with a wrong x-amz-checksum-sha256")
	}
	for _, c := range caps.Checks {
		t.Logf("%-30s %-4s %s", c.Name, c.Result, c.Detail)
	}
}

// (b) A copy sent in parts to the lying cloud (which stores parts with
// their chunk framing), proven by read-back as its probe demands, fails
// with ErrIntegrity naming the key, and the corrupt object is deleted:
// never a success.
func TestLyingCloudCopyReadBackCatches(t *testing.T) {
	const part = 5 << 20
	liar := lyingCloud(t, part)
	src := localStore(t)
	ctx := context.Background()
	body := randomBytes(9, 12<<20)
	sum := sha256.Sum256(body)
	key := "export-1/Patient.ndjson.age"
	putLocal(t, src, key, body)

	res, err := storage.Copy(ctx, src, liar, key, storage.CopyOptions{
		Size: int64(len(body)), SHA256: sum[:], PartSize: part, TrustServerChecksum: false, SinglePutMax: -1,
	})
	if err == nil {
		t.Fatalf("copy to the lying cloud succeeded: %+v", res)
	}
	if !errors.Is(err, storage.ErrIntegrity) {
		t.Fatalf("copy to the lying cloud: %v, want ErrIntegrity", err)
	}
	if !strings.Contains(err.Error(), key) || !strings.Contains(err.Error(), "deleted") {
		t.Errorf("error should name the key and say the copy was deleted: %v", err)
	}
	if errors.Is(err, storage.ErrUnavailable) || res.Retries != 0 {
		t.Errorf("an integrity failure was retried (%d retries): %v", res.Retries, err)
	}
	if _, err := liar.Stat(ctx, key); !errors.Is(err, storage.ErrNotExist) {
		t.Errorf("corrupt copy still visible: stat = %v", err)
	}
	t.Logf("caught: %v", err)

	// A single-PUT object is stored intact by gofakes3, and read-back
	// proves it: a small one, and by default (one request up to
	// SinglePutMax) the same 12 MiB object, above the store's part size.
	small := randomBytes(10, 4096)
	ssum := sha256.Sum256(small)
	putLocal(t, src, "small", small)
	res, err = storage.Copy(ctx, src, liar, "small", storage.CopyOptions{Size: 4096, SHA256: ssum[:], PartSize: part})
	if err != nil || res.Proof != storage.ProofReadBack {
		t.Fatalf("small copy: %+v, %v", res, err)
	}
	res, err = storage.Copy(ctx, src, liar, key, storage.CopyOptions{Size: int64(len(body)), SHA256: sum[:], PartSize: part})
	if err != nil || res.Proof != storage.ProofReadBack {
		t.Fatalf("12 MiB copy in one PUT: %+v, %v", res, err)
	}
	if !bytes.Equal(readAll(t, liar, key), body) {
		t.Fatal("12 MiB copy in one PUT: stored bytes differ")
	}
}

// (c) Trust set without a probe: what a Stat (even one that asks for the
// stored checksum) would have accepted. The lying cloud keeps whatever
// bytes it gets and echoes back the checksum it was sent, so only a
// read-back sees the difference. This is why TrustServerChecksum must come
// from Check, never from a default.
func TestLyingCloudTrustWithoutProbeIsFooled(t *testing.T) {
	liar := lyingCloud(t, 5<<20)
	ctx := context.Background()
	good := randomBytes(11, 64<<10)
	sum := sha256.Sum256(good)
	bad := bytes.Clone(good)
	bad[1000] ^= 0x40 // one flipped bit, same size
	key := "export-1/Observation.ndjson.age"
	// The destination is handed the wrong bytes with the right checksum
	// header, as a source or network fault would; an honest server refuses.
	if err := liar.Put(ctx, key, bytes.NewReader(bad), int64(len(bad)), storage.PutOptions{SHA256: sum[:]}); err != nil {
		t.Fatalf("the lying cloud refused a wrong checksum: %v", err)
	}

	proof, err := storage.Prove(ctx, liar, key, int64(len(good)), sum[:], true)
	if err != nil || proof != storage.ProofServerChecksum {
		t.Fatalf("expected the Stat-only proof to be fooled, got %q, %v", proof, err)
	}
	t.Logf("Stat-only proof with trust wrongly set: %q, err=%v (fooled: the bytes differ)", proof, err)

	// SkipExisting would have kept the bad copy.
	src := localStore(t)
	putLocal(t, src, key, good)
	res, err := storage.Copy(ctx, src, liar, key, storage.CopyOptions{Size: int64(len(good)), SHA256: sum[:], SkipExisting: true, TrustServerChecksum: true})
	if err != nil || !res.Skipped {
		t.Fatalf("expected a (wrong) skip with trust set: %+v, %v", res, err)
	}

	_, err = storage.Prove(ctx, liar, key, int64(len(good)), sum[:], false)
	if !errors.Is(err, storage.ErrIntegrity) || !strings.Contains(err.Error(), key) {
		t.Fatalf("read-back proof: %v, want ErrIntegrity naming the key", err)
	}

	// With trust as the probe says (false), a rerun re-reads, finds the bad
	// copy and replaces it.
	res, err = storage.Copy(ctx, src, liar, key, storage.CopyOptions{Size: int64(len(good)), SHA256: sum[:], SkipExisting: true})
	if err != nil || res.Skipped || res.Proof != storage.ProofReadBack {
		t.Fatalf("rerun with read-back: %+v, %v", res, err)
	}
	if !bytes.Equal(readAll(t, liar, key), good) {
		t.Fatal("bad copy not replaced")
	}
}

// A source serving other bytes than the manifest says, copied to a cloud
// that verifies nothing: the held-back last byte is all that stops the
// object from being committed, and it does, for a single PUT and for a
// multipart upload alike.
func TestLyingCloudSourceMismatchNeverCommitted(t *testing.T) {
	const part = 5 << 20
	liar := lyingCloud(t, part)
	src := localStore(t)
	ctx := context.Background()
	for _, n := range []int64{4096, 12 << 20} {
		// 12 MiB goes in one PUT by default, in parts with SinglePutMax -1.
		for _, single := range []int64{0, -1} {
			good := randomBytes(uint64(n), n)
			sum := sha256.Sum256(good)
			served := bytes.Clone(good)
			served[n-1] ^= 1 // the last byte: the lying cloud never sees it
			key := fmt.Sprintf("mismatch/%d/%d", n, single)
			putLocal(t, src, key, served)
			_, err := storage.Copy(ctx, src, liar, key, storage.CopyOptions{Size: n, SHA256: sum[:], PartSize: part, Retry: noRetry, SinglePutMax: single})
			if !errors.Is(err, storage.ErrIntegrity) || !strings.Contains(err.Error(), key) {
				t.Fatalf("%d bytes (single-put max %d): %v, want ErrIntegrity naming the key", n, single, err)
			}
			if _, err := liar.Stat(ctx, key); !errors.Is(err, storage.ErrNotExist) {
				t.Fatalf("%d bytes (single-put max %d): the lying cloud committed the object (stat %v)", n, single, err)
			}
		}
	}
}

// Trust set on a cloud that verifies nothing, and a source that serves
// other bytes of the right length. A copy that goes in one PUT leaves the
// content check to the trusted server (the client does not hash it a second
// time), so the lying cloud commits it and the copy reports the server's
// proof: the other half of why trust must come from Check. In parts the
// server checks only each part, so the client still compares the whole
// object and nothing is committed; a wrong length is caught by the client
// either way.
func TestLyingCloudTrustedCopyLeavesContentToServer(t *testing.T) {
	const part = 5 << 20
	liar := lyingCloud(t, part)
	src := localStore(t)
	ctx := context.Background()
	n := int64(12 << 20)
	good := randomBytes(21, n)
	sum := sha256.Sum256(good)
	flipped := bytes.Clone(good)
	flipped[n/2] ^= 1
	for _, tc := range []struct {
		name      string
		served    []byte
		single    int64
		committed bool
	}{
		{"content/one-put", flipped, 0, true},
		{"content/parts", flipped, -1, false},
		{"short/one-put", good[:n-1], 0, false},
		{"long/one-put", append(bytes.Clone(good), 'x'), 0, false},
	} {
		key := "trusted/" + tc.name
		putLocal(t, src, key, tc.served)
		res, err := storage.Copy(ctx, src, liar, key, storage.CopyOptions{Size: n, SHA256: sum[:], PartSize: part, Retry: noRetry, SinglePutMax: tc.single, TrustServerChecksum: true})
		_, serr := liar.Stat(ctx, key)
		if tc.committed {
			if err != nil || res.Proof != storage.ProofServerChecksum || serr != nil {
				t.Fatalf("%s: %+v, %v (stat %v): want the wrong bytes committed on the trusted server's word", tc.name, res, err, serr)
			}
			continue
		}
		if !errors.Is(err, storage.ErrIntegrity) || !strings.Contains(err.Error(), key) {
			t.Fatalf("%s: %v, want ErrIntegrity naming the key", tc.name, err)
		}
		if !errors.Is(serr, storage.ErrNotExist) {
			t.Fatalf("%s: the lying cloud committed the object (stat %v)", tc.name, serr)
		}
	}
}
