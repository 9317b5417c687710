package artifact

import (
	"path"
	"strings"
)

// Kind is what an artifact is for.
type Kind string

// Kinds of artifact.
const (
	KindModel   Kind = "model"
	KindCode    Kind = "code"
	KindDataset Kind = "dataset"
	KindMetrics Kind = "metrics"
	KindUpdate  Kind = "update"
	KindJoint   Kind = "joint"
	// KindImage is a container image: deployed as a container, never
	// unpacked into files.
	KindImage Kind = "image"
	// KindGeneric is any other artifact, such as what plain `oras push`
	// makes: files by title, no typed config.
	KindGeneric Kind = "generic"
)

// ParseKind checks a kind given by a user.
func ParseKind(s string) (Kind, error) {
	switch k := Kind(strings.ToLower(s)); k {
	case KindModel, KindCode, KindDataset:
		return k, nil
	}
	return "", errorf("unknown kind %q: use model, code or dataset", s)
}

var (
	weightExts = setOf(".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".onnx", ".gguf", ".ggml",
		".pb", ".tflite", ".h5", ".keras", ".params", ".pdparams", ".pdmodel", ".mlmodel", ".engine",
		".plan", ".trt", ".npz", ".npy", ".msgpack", ".caffemodel", ".torchscript", ".rknn", ".xml")
	configNames = setOf("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
		"special_tokens_map.json", "vocab.json", "vocab.txt", "merges.txt", "preprocessor_config.json",
		"labels.txt", "classes.txt", "label_map.txt", "labels.json", "tokenizer.model")
	configExts = setOf(".json", ".yaml", ".yml", ".toml", ".cfg", ".ini", ".prototxt")
	codeExts   = setOf(".py", ".sh", ".go", ".js", ".ts", ".lua", ".r", ".ipynb", ".c", ".cc", ".cpp", ".h", ".java", ".rs")
	docExts    = setOf(".md", ".rst", ".txt", ".pdf", ".html")
	docPrefix  = []string{"readme", "license", "licence", "notice", "changelog", "model_card", "modelcard"}
)

func setOf(items ...string) map[string]bool {
	m := make(map[string]bool, len(items))
	for _, s := range items {
		m[s] = true
	}
	return m
}

// roleOf is the code role a file has by where it lives: a top-level
// directory named after a role (preprocess/, postprocess/, train/,
// aggregate/) holds that role's code.
func roleOf(rel string) string {
	top, _, found := strings.Cut(rel, "/")
	if !found {
		return ""
	}
	for _, r := range Roles {
		if top == r {
			return r
		}
	}
	return ""
}

// layerMediaType chooses a file's layer media type from its path, the
// ModelPack way: weights, weight configs, code, docs.
func layerMediaType(kind Kind, rel string) string {
	switch kind {
	case KindCode:
		return MediaTypeModelCodeRaw
	case KindDataset:
		return MediaTypeModelDatasetRaw
	}
	if roleOf(rel) != "" {
		return MediaTypeModelCodeRaw
	}
	base := strings.ToLower(path.Base(rel))
	ext := path.Ext(base)
	switch {
	case configNames[base]:
		return MediaTypeModelWeightConfigRaw
	case weightExts[ext]:
		return MediaTypeModelWeightRaw
	case codeExts[ext]:
		return MediaTypeModelCodeRaw
	case configExts[ext]:
		return MediaTypeModelWeightConfigRaw
	case docExts[ext] || hasAnyPrefix(base, docPrefix):
		return MediaTypeModelDocRaw
	}
	return MediaTypeModelWeightRaw
}

func hasAnyPrefix(s string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}
