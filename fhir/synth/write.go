package synth

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
)

// WriteNDJSON writes one <Type>.ndjson file per resource type into dir,
// references as Type/id, and returns the number of resources per type.
// Memory stays constant whatever the number of patients.
func WriteNDJSON(dir string, o Options) (map[string]int, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	files := map[string]*os.File{}
	writers := map[string]*bufio.Writer{}
	counts := map[string]int{}
	closeAll := func() error {
		var first error
		for _, t := range Types {
			if w := writers[t]; w != nil {
				if err := w.Flush(); err != nil && first == nil {
					first = err
				}
				if err := files[t].Close(); err != nil && first == nil {
					first = err
				}
			}
		}
		return first
	}
	for _, t := range Types {
		f, err := os.Create(filepath.Join(dir, t+".ndjson"))
		if err != nil {
			closeAll()
			return nil, err
		}
		files[t], writers[t] = f, bufio.NewWriterSize(f, 256<<10)
	}
	err := Generate(o, false, func(r Resource) error {
		w := writers[r.Type]
		counts[r.Type]++
		if _, err := w.Write(r.JSON); err != nil {
			return err
		}
		return w.WriteByte('\n')
	})
	if cerr := closeAll(); err == nil {
		err = cerr
	}
	return counts, err
}

// WriteTransactionBundles writes transaction Bundles into dir: first
// Bundle-shared.json with the organizations and practitioners (PUT), then
// Bundle-NNNNNN.json with perBundle patients each, whose entries are linked
// by urn:uuid fullUrls and created with POST (the Synthea shape). It
// returns the number of Bundles written.
func WriteTransactionBundles(dir string, o Options, perBundle int) (int, error) {
	if perBundle < 1 {
		perBundle = 1
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, err
	}
	write := func(name string, body func(entry func(Resource, bool) error) error) error {
		f, err := os.Create(filepath.Join(dir, name))
		if err != nil {
			return err
		}
		w := bufio.NewWriterSize(f, 256<<10)
		w.WriteString(`{"resourceType":"Bundle","type":"transaction","entry":[`)
		n := 0
		err = body(func(r Resource, put bool) error {
			if n > 0 {
				w.WriteByte(',')
			}
			n++
			fmt.Fprintf(w, `{"fullUrl":"urn:uuid:%s","resource":`, r.ID)
			w.Write(r.JSON)
			if put {
				fmt.Fprintf(w, `,"request":{"method":"PUT","url":"%s/%s"}}`, r.Type, r.ID)
			} else {
				fmt.Fprintf(w, `,"request":{"method":"POST","url":"%s"}}`, r.Type)
			}
			return nil
		})
		w.WriteString("]}\n")
		if ferr := w.Flush(); err == nil {
			err = ferr
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		return err
	}
	g := &gen{o: o}
	err := write("Bundle-shared.json", func(entry func(Resource, bool) error) error {
		g.emit = func(r Resource) error { return entry(r, true) }
		for i := 0; i < orgCount(o.Patients); i++ {
			if err := g.organization(i); err != nil {
				return err
			}
		}
		for i := 0; i < practCount(o.Patients); i++ {
			if err := g.practitioner(i); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	n := 1
	for from := 0; from < o.Patients; from += perBundle {
		to := min(from+perBundle, o.Patients)
		err := write(fmt.Sprintf("Bundle-%06d.json", from/perBundle), func(entry func(Resource, bool) error) error {
			return GeneratePatients(o, true, from, to, func(r Resource) error { return entry(r, false) })
		})
		if err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}
