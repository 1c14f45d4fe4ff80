package verify

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"iter"
	"sync"
	"time"

	"github.com/ehrport/ehrport/cmd/internal/export"
	"github.com/ehrport/ehrport/cmd/internal/workers"
	"github.com/ehrport/ehrport/storage"
)

// CompareOptions configure Compare.
type CompareOptions struct {
	// Reference is the store taken as right (the source); Store is checked
	// against it (the target).
	Store, Reference storage.Store
	Concurrency      int
	Progress         func(objects int, bytes int64)
}

// Compare checks two locations object by object: every key of Reference
// must be in Store with the same bytes (SHA-256 of full reads on both
// sides), and Store must hold nothing else. It needs no manifest and no key,
// and runs in memory independent of the number of objects, because both
// listings arrive in key order and are merged.
func Compare(ctx context.Context, o CompareOptions) (*Report, error) {
	if o.Concurrency <= 0 {
		o.Concurrency = DefaultConcurrency
	}
	start := time.Now()
	rep := &Report{Location: o.Store.Location(), Proof: "read-back of both sides: SHA-256 of every byte"}
	v := &verifier{rep: rep}
	work := make(chan string)
	var wg sync.WaitGroup
	var firstErr error
	var once sync.Once
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for range o.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for key := range work {
				if err := v.compareOne(wctx, o, key); err != nil {
					once.Do(func() { firstErr = err; cancel() })
				}
			}
		}()
	}
	listErr := func() error {
		defer close(work)
		nextA, stopA := iter.Pull2(o.Reference.List(wctx, ""))
		defer stopA()
		nextB, stopB := iter.Pull2(o.Store.List(wctx, ""))
		defer stopB()
		a, errA, okA := nextA()
		b, errB, okB := nextB()
		for okA || okB {
			if errA != nil {
				return errA
			}
			if errB != nil {
				return errB
			}
			switch {
			case okA && (!okB || a.Key < b.Key):
				v.add(Finding{Code: "missing", Object: a.Key, Expected: fmt.Sprintf("%d bytes", a.Size), Found: "nothing", Message: "in " + o.Reference.Location() + " but not here"})
				a, errA, okA = nextA()
			case okB && (!okA || b.Key < a.Key):
				v.add(Finding{Code: "extra", Object: b.Key, Found: fmt.Sprintf("%d bytes", b.Size), Message: "here but not in " + o.Reference.Location()})
				b, errB, okB = nextB()
			default:
				rep.Objects++
				if a.Size != b.Size {
					v.add(Finding{Code: "size-mismatch", Object: a.Key, Expected: fmt.Sprintf("%d bytes", a.Size), Found: fmt.Sprintf("%d bytes", b.Size), Message: "sizes differ"})
				} else {
					select {
					case work <- a.Key:
					case <-wctx.Done():
						return wctx.Err()
					}
				}
				a, errA, okA = nextA()
				b, errB, okB = nextB()
			}
		}
		return nil
	}()
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if firstErr != nil {
		return nil, firstErr
	}
	if listErr != nil {
		return nil, listErr
	}
	rep.NotChecked = []string{"whether either side is a complete, signed export: run verify --at on each"}
	v.sort()
	rep.Duration = time.Since(start)
	return rep, nil
}

func (v *verifier) compareOne(ctx context.Context, o CompareOptions, key string) error {
	var sums [2]string
	var sizes [2]int64
	var errs [2]error
	var wg sync.WaitGroup
	for i, st := range []storage.Store{o.Reference, o.Store} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sums[i], sizes[i], errs[i] = hashObject(ctx, st, key)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if errors.Is(err, storage.ErrNotExist) {
			v.add(Finding{Code: "missing", Object: key, Message: fmt.Sprintf("deleted while comparing (side %d)", i+1)})
			return nil
		}
		if err != nil {
			return err
		}
	}
	v.mu.Lock()
	v.rep.Bytes += sizes[1]
	v.mu.Unlock()
	if sums[0] != sums[1] {
		v.add(Finding{Code: "sha256-mismatch", Object: key, Expected: sums[0], Found: sums[1], Message: "same size, different bytes"})
		return nil
	}
	v.mu.Lock()
	v.rep.ObjectsVerified++
	objs, b := v.rep.ObjectsVerified, v.rep.Bytes
	v.mu.Unlock()
	if o.Progress != nil {
		o.Progress(objs, b)
	}
	return nil
}

func hashObject(ctx context.Context, st storage.Store, key string) (string, int64, error) {
	rc, err := st.Get(ctx, key)
	if err != nil {
		return "", 0, err
	}
	defer rc.Close()
	h := sha256.New()
	n, err := io.Copy(h, rc)
	if err != nil {
		return "", n, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// CompareByManifest compares o.Reference with o.Store when Store's export
// was just verified (rep, from Run): every object the manifest lists must
// have the manifest's size and SHA-256 at the reference too (the store's
// copies were checked against the same values), the manifest files must be
// byte-identical, and the reference must hold nothing else. When Run was
// given the reference (Options.Reference), it already compared each
// reference object byte for byte with the store's copy while reading it;
// an object equal to a copy that matched the manifest is proven and not
// read again, and only the others are read and hashed here. Each side is
// so read once. Without a verified manifest it falls back to Compare.
func CompareByManifest(ctx context.Context, rep *Report, o CompareOptions) (*Report, error) {
	if rep == nil || rep.manifest == nil {
		return Compare(ctx, o)
	}
	if o.Concurrency <= 0 {
		o.Concurrency = DefaultConcurrency
	}
	start := time.Now()
	out := &Report{Location: o.Store.Location(), ExportID: rep.ExportID,
		Proof: "the reference read back in full against the same signed manifest the target was verified with (each side read once)"}
	if rep.refSame != nil {
		out.Proof = "the reference read back in full, at the same time as the target, and compared byte for byte with the target's copies that matched the signed manifest's SHA-256 (hashed against the manifest where they did not): each side read once"
	}
	v := &verifier{rep: out}
	ext := rep.manifest.Extension.Ehrport
	listed := map[string]bool{export.ManifestKey: true, export.SignatureKey: true}
	for _, e := range ext.Objects {
		listed[e.Key] = true
	}
	// The manifest files themselves: byte for byte.
	for _, key := range []string{export.ManifestKey, export.SignatureKey} {
		got, err := readSmall(ctx, o.Reference, key)
		want, werr := readSmall(ctx, o.Store, key)
		switch {
		case errors.Is(err, storage.ErrNotExist) && errors.Is(werr, storage.ErrNotExist):
		case errors.Is(err, storage.ErrNotExist):
			v.add(Finding{Code: "extra", Object: key, Message: "here but not in " + o.Reference.Location()})
		case err != nil:
			return nil, err
		case werr != nil && !errors.Is(werr, storage.ErrNotExist):
			return nil, werr
		case !bytes.Equal(got, want):
			v.add(Finding{Code: "sha256-mismatch", Object: key, Message: "differs from the reference's"})
		default:
			out.Objects++
			out.ObjectsVerified++
		}
	}
	err := workers.ForEach(ctx, o.Concurrency, indices(len(ext.Objects)), func(ctx context.Context, i int) error {
		e := ext.Objects[i]
		var sum string
		var n int64
		var err error
		if rep.refSame != nil && rep.refSame[i] {
			sum, n = e.SHA256, e.Size // equal to the copy that matched them
		} else {
			sum, n, err = hashObject(ctx, o.Reference, e.Key)
		}
		v.mu.Lock()
		out.Objects++
		switch {
		case errors.Is(err, storage.ErrNotExist):
			v.rep.Findings = append(v.rep.Findings, Finding{Code: "missing-in-reference", Object: e.Key, Message: "listed in the manifest but not in " + o.Reference.Location()})
		case err != nil:
			v.mu.Unlock()
			return err
		case n != e.Size || sum != e.SHA256:
			v.rep.Findings = append(v.rep.Findings, Finding{Code: "sha256-mismatch", Object: e.Key, Expected: e.SHA256, Found: sum,
				Message: "the reference's bytes differ from the manifest the target matches"})
		default:
			out.ObjectsVerified++
			out.Bytes += n
		}
		objs, b := out.ObjectsVerified, out.Bytes
		v.mu.Unlock()
		if o.Progress != nil {
			o.Progress(objs, b)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for oi, err := range o.Reference.List(ctx, "") {
		if err != nil {
			return nil, err
		}
		if !listed[oi.Key] {
			v.add(Finding{Code: "only-in-reference", Object: oi.Key, Found: fmt.Sprintf("%d bytes", oi.Size), Message: "in " + o.Reference.Location() + " but not in the manifest here"})
		}
	}
	out.NotChecked = []string{"whether the reference is itself a complete, signed export: run verify --at on it"}
	v.sort()
	out.Duration = time.Since(start)
	return out, nil
}

func readSmall(ctx context.Context, st storage.Store, key string) ([]byte, error) {
	rc, err := st.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(io.LimitReader(rc, 64<<20))
}
