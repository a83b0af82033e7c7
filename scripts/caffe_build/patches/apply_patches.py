"""Apply mtcnn-caffe's source patch to an extracted brocolli-caffe sdist.

Usage: python apply_patches.py SDIST_SOURCE_DIR

The sdist calls the transformer's resize field ``old_resize_param`` and has no
``distort_param`` / ``expand_param``, so SSD's reference train prototxts do not
parse. This patch restores weiliu89's field names and numbers (resize_param = 8,
distort_param = 13, expand_param = 14) and adds the augmentation itself
(ssd_augment/ssd_augment.{hpp,cpp}, written for this project), called by
AnnotatedData before its batch samplers, as in SSD. It also adds a native CPU
depthwise convolution layer (depthwise_conv/depthwise_conv_layer.{hpp,cpp},
written for this project), registered as ``ConvolutionDepthwise`` and
``DepthwiseConvolution``; the build compiles every src/caffe/layers/*.cpp, so
copying the files in is all it takes. PReLU's CPU loops run plane by plane
(the slope looked up once per channel plane instead of an integer division
per element; PRELU_EDITS), and max pooling keeps each window's running
maximum in locals (MAX_POOL_EDITS); both give the sdist's results.

Every edit is an exact string replacement whose anchor must occur the expected
number of times: a changed sdist stops the build with the file and anchor
named instead of compiling something half-patched.
"""
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

SSD_TRANSFORM_FIELDS = """\
  optional EmitConstraint emit_constraint = 10;
  // Photometric distortion policy (SSD).
  optional DistortionParameter distort_param = 13;
  // Zoom-out (expansion) policy (SSD).
  optional ExpansionParameter expand_param = 14;
}

// Random photometric distortion (SSD): each step runs with its probability.
message DistortionParameter {
  optional float brightness_prob = 1 [default = 0.0];
  // Added to every pixel: uniform in [-delta, delta].
  optional float brightness_delta = 2 [default = 0.0];
  optional float contrast_prob = 3 [default = 0.0];
  // Every pixel is multiplied by a factor uniform in [lower, upper].
  optional float contrast_lower = 4 [default = 0.0];
  optional float contrast_upper = 5 [default = 0.0];
  optional float hue_prob = 6 [default = 0.0];
  // Added to the hue (OpenCV 8-bit scale, 0-180, wrapping): uniform in
  // [-delta, delta].
  optional float hue_delta = 7 [default = 0.0];
  optional float saturation_prob = 8 [default = 0.0];
  // The saturation is multiplied by a factor uniform in [lower, upper].
  optional float saturation_lower = 9 [default = 0.0];
  optional float saturation_upper = 10 [default = 0.0];
  // Probability of a random permutation of the colour channels.
  optional float random_order_prob = 11 [default = 0.0];
}

// Zoom-out (SSD): with probability prob the image is placed at a random
// position on a canvas r times its size (r uniform in [1, max_expand_ratio])
// filled with mean_value; its boxes move with it.
message ExpansionParameter {
  optional float prob = 1 [default = 1];
  optional float max_expand_ratio = 2 [default = 1.];
}
"""

# PReLU on the CPU, plane by plane. The sdist finds each element's channel with an integer division and a
# modulo ((i / dim) % channels): in MTCNN training that made PReLU a third of an O-Net iteration. The same
# arithmetic per element, with the slope looked up once per (n, c) plane; the slope gradient sums a plane
# into a local before adding it (a different summation order, so last-bit differences only).
PRELU = "src/caffe/layers/prelu_layer.cpp"
PRELU_PLANES = (
    "  const int div_factor = channel_shared_ ? channels : 1;\n"
    "  // mtcnn-caffe: one slope per (n, c) plane of dim elements.\n"
    "  const int planes = dim > 0 ? count / dim : 0;\n")
PRELU_EDITS = [
    (PRELU,
     "  const int div_factor = channel_shared_ ? channels : 1;\n",
     PRELU_PLANES, 2),
    (PRELU,
     """  for (int i = 0; i < count; ++i) {
    int c = (i / dim) % channels / div_factor;
    top_data[i] = std::max(bottom_data[i], Dtype(0))
        + slope_data[c] * std::min(bottom_data[i], Dtype(0));
  }
""",
     """  for (int p = 0; p < planes; ++p) {
    const Dtype slope = slope_data[p % channels / div_factor];
    const Dtype* x = bottom_data + static_cast<size_t>(p) * dim;
    Dtype* y = top_data + static_cast<size_t>(p) * dim;
    for (int j = 0; j < dim; ++j) {
      y[j] = std::max(x[j], Dtype(0)) + slope * std::min(x[j], Dtype(0));
    }
  }
""", 1),
    (PRELU,
     """    for (int i = 0; i < count; ++i) {
      int c = (i / dim) % channels / div_factor;
      slope_diff[c] += top_diff[i] * bottom_data[i] * (bottom_data[i] <= 0);
    }
""",
     """    for (int p = 0; p < planes; ++p) {
      const Dtype* x = bottom_data + static_cast<size_t>(p) * dim;
      const Dtype* dy = top_diff + static_cast<size_t>(p) * dim;
      Dtype sum = 0;
      for (int j = 0; j < dim; ++j) {
        sum += dy[j] * x[j] * (x[j] <= 0);
      }
      slope_diff[p % channels / div_factor] += sum;
    }
""", 1),
    (PRELU,
     """    for (int i = 0; i < count; ++i) {
      int c = (i / dim) % channels / div_factor;
      bottom_diff[i] = top_diff[i] * ((bottom_data[i] > 0)
          + slope_data[c] * (bottom_data[i] <= 0));
    }
""",
     """    for (int p = 0; p < planes; ++p) {
      const Dtype slope = slope_data[p % channels / div_factor];
      const size_t offset = static_cast<size_t>(p) * dim;
      const Dtype* x = bottom_data + offset;
      const Dtype* dy = top_diff + offset;
      Dtype* dx = bottom_diff + offset;
      for (int j = 0; j < dim; ++j) {
        dx[j] = dy[j] * ((x[j] > 0) + slope * (x[j] <= 0));
      }
    }
""", 1),
]

# Max pooling on the CPU: the sdist compares each window element with the output in memory and stores the
# output and its index at every new maximum (a third of an O-Net iteration with PReLU fixed). The same scan
# (row by row, strict >, so the first maximum wins and an all -FLT_MAX / NaN window keeps index -1) with the
# running maximum in locals, stored once per output: identical outputs and masks.
MAX_POOL_EDITS = [
    ("src/caffe/layers/pooling_layer.cpp",
     """            const int pool_index = ph * pooled_width_ + pw;
            for (int h = hstart; h < hend; ++h) {
              for (int w = wstart; w < wend; ++w) {
                const int index = h * width_ + w;
                if (bottom_data[index] > top_data[pool_index]) {
                  top_data[pool_index] = bottom_data[index];
                  if (use_top_mask) {
                    top_mask[pool_index] = static_cast<Dtype>(index);
                  } else {
                    mask[pool_index] = index;
                  }
                }
              }
            }
""",
     """            const int pool_index = ph * pooled_width_ + pw;
            // mtcnn-caffe: the running maximum in locals, stored once.
            Dtype best = top_data[pool_index];
            int best_index = -1;
            for (int h = hstart; h < hend; ++h) {
              const Dtype* row = bottom_data + h * width_;
              for (int w = wstart; w < wend; ++w) {
                if (row[w] > best) {
                  best = row[w];
                  best_index = h * width_ + w;
                }
              }
            }
            top_data[pool_index] = best;
            if (use_top_mask) {
              top_mask[pool_index] = static_cast<Dtype>(best_index);
            } else {
              mask[pool_index] = best_index;
            }
""", 1),
]

# (file, anchor, replacement, expected number of occurrences)
EDITS = [
    ("src/caffe/proto/caffe.proto",
     "  optional OldResizeParameter old_resize_param = 8;\n",
     "  optional OldResizeParameter resize_param = 8;\n", 1),
    ("src/caffe/proto/caffe.proto",
     "  optional EmitConstraint emit_constraint = 10;\n}\n",
     SSD_TRANSFORM_FIELDS, 1),
    ("src/caffe/data_transformer.cpp", "old_resize_param", "resize_param", 19),
    ("src/caffe/layers/annotated_data_layer.cpp",
     '#include "caffe/util/sampler.hpp"\n',
     '#include "caffe/util/sampler.hpp"\n#include "caffe/util/ssd_augment.hpp"\n', 1),
    ("src/caffe/layers/annotated_data_layer.cpp",
     "  label_map_file_ = anno_data_param.label_map_file();\n",
     ("  label_map_file_ = anno_data_param.label_map_file();\n"
      "  CheckSsdAugmentationParameter(this->layer_param_.transform_param());\n"), 1),
    ("src/caffe/layers/annotated_data_layer.cpp",
     "    AnnotatedDatum sampled_datum;\n",
     ("    AnnotatedDatum sampled_datum;\n"
      "    // Distortion and expansion come first, then the batch samplers (SSD).\n"
      "    AnnotatedDatum augmented_datum;\n"
      "    const AnnotatedDatum& source_datum = AugmentAnnotatedDatum(\n"
      "        this->layer_param_.transform_param(), anno_datum, &augmented_datum)\n"
      "        ? augmented_datum : anno_datum;\n"), 1),
    ("src/caffe/layers/annotated_data_layer.cpp",
     "GenerateBatchSamples(anno_datum, batch_samplers_, &sampled_bboxes);",
     "GenerateBatchSamples(source_datum, batch_samplers_, &sampled_bboxes);", 1),
    ("src/caffe/layers/annotated_data_layer.cpp",
     "CropImage(anno_datum, sampled_bboxes[rand_idx],",
     "CropImage(source_datum, sampled_bboxes[rand_idx],", 1),
    ("src/caffe/layers/annotated_data_layer.cpp",
     "sampled_datum.CopyFrom(anno_datum);",
     "sampled_datum.CopyFrom(source_datum);", 2),
] + PRELU_EDITS + MAX_POOL_EDITS

NEW_FILES = [
    ("ssd_augment/ssd_augment.hpp", "include/caffe/util/ssd_augment.hpp"),
    ("ssd_augment/ssd_augment.cpp", "src/caffe/util/ssd_augment.cpp"),
    ("depthwise_conv/depthwise_conv_layer.hpp", "include/caffe/layers/depthwise_conv_layer.hpp"),
    ("depthwise_conv/depthwise_conv_layer.cpp", "src/caffe/layers/depthwise_conv_layer.cpp"),
]


def replace_exactly(path: Path, anchor: str, replacement: str, expected: int) -> None:
    """Replace `anchor` in `path`, which must occur exactly `expected` times."""
    text = path.read_text()
    found = text.count(anchor)
    if found != expected:
        raise SystemExit(f"patch: {path}: anchor {anchor.strip()[:60]!r} found {found} times, "
                         f"expected {expected} (sdist changed?)")
    path.write_text(text.replace(anchor, replacement))


def apply(src: Path) -> None:
    """Apply every edit and copy the new files into the sdist tree at `src`."""
    for rel, anchor, replacement, expected in EDITS:
        replace_exactly(src / rel, anchor, replacement, expected)
    for ours, dest in NEW_FILES:
        target = src / dest
        if target.exists():
            raise SystemExit(f"patch: {target} already exists (sdist changed?)")
        shutil.copyfile(HERE / ours, target)


if __name__ == "__main__":
    if len(sys.argv) != 2 or not Path(sys.argv[1], "src/caffe").is_dir():
        raise SystemExit("usage: apply_patches.py SDIST_SOURCE_DIR")
    apply(Path(sys.argv[1]))
    print("patch: SSD resize/distort/expand fields and augmentation, depthwise convolution layer, plane-wise PReLU, "
          "max pooling with the maximum in locals applied")
