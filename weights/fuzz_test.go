package weights

import "testing"

// FuzzSafetensorsHeader feeds arbitrary bytes to the file parser, header
// length prefix included. Seeds live in testdata/fuzz/FuzzSafetensorsHeader.
// Whatever the input, parsing must not panic, and a file it accepts must
// yield exactly the declared number of float32 values for every F32, F16 and
// BF16 tensor and an error for every other dtype.
func FuzzSafetensorsHeader(f *testing.F) {
	f.Add(rawFile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, make([]byte, 8)))
	f.Add(rawFile(`{"__metadata__":{"format":"pt"},"b":{"dtype":"BF16","shape":[1,2],"data_offsets":[4,8]},"h":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}}`, make([]byte, 8)))
	f.Fuzz(func(t *testing.T, file []byte) {
		sf, err := parseSafetensors(file, "fuzz")
		if err != nil {
			return
		}
		defer sf.Close()
		for _, info := range sf.Tensors() {
			if info.Begin < 0 || info.End < info.Begin || info.End > int64(len(sf.data)) {
				t.Fatalf("accepted bad span %+v for %d data bytes", info, len(sf.data))
			}
			v, err := sf.Float32(info.Name)
			switch info.DType {
			case "F32", "F16", "BF16":
				if err != nil {
					t.Fatalf("%s: %v", info.Name, err)
				}
				if len(v) != info.NumElements() {
					t.Fatalf("%s: %d values for shape %v", info.Name, len(v), info.Shape)
				}
			default:
				if err == nil {
					t.Fatalf("%s: dtype %s read as float32", info.Name, info.DType)
				}
			}
		}
	})
}
