// SSD data augmentation for AnnotatedData: photometric distortion
// (distort_param) and zoom-out expansion (expand_param).
// Written for mtcnn-caffe; added to the brocolli-caffe sources by
// scripts/caffe_build/patches/apply_patches.py.
#ifndef CAFFE_UTIL_SSD_AUGMENT_HPP_
#define CAFFE_UTIL_SSD_AUGMENT_HPP_

#ifdef USE_OPENCV
#include <opencv2/core/core.hpp>
#endif  // USE_OPENCV

#include <vector>

#include "caffe/proto/caffe.pb.h"

namespace caffe {

// Stops with a message naming the field when distort_param or expand_param
// hold values the augmentation cannot use (ranges reversed, probabilities
// outside [0, 1], expansion without a fixed resize_param output size).
void CheckSsdAugmentationParameter(const TransformationParameter& param);

// Applies distort_param, then expand_param, to the image and the boxes of
// `in`. Returns false (and leaves `out` untouched) when neither is set, so
// the caller keeps using `in` without a copy. An encoded datum stays encoded
// (lossless PNG), a raw uint8 datum stays raw.
bool AugmentAnnotatedDatum(const TransformationParameter& param,
                           const AnnotatedDatum& in, AnnotatedDatum* out);

#ifdef USE_OPENCV
// Random photometric distortion of an 8-bit image, in SSD's order: brightness,
// then either contrast, saturation, hue or saturation, hue, contrast (even
// odds), then a random channel order. Each step runs with its own probability.
// Saturation, hue and channel order apply to 3-channel (BGR) images only.
cv::Mat SsdDistortImage(const cv::Mat& img, const DistortionParameter& param);

// With probability param.prob, places the image at a random position on a
// canvas max(1, r) times as wide and high, r uniform in [1, max_expand_ratio],
// filled with `fill` (one value per channel). `placed` receives the image's
// rectangle on the canvas in canvas-normalised coordinates (the unit box when
// nothing was done). Returns the canvas (or the image itself).
cv::Mat SsdExpandImage(const cv::Mat& img, const ExpansionParameter& param,
                       const std::vector<float>& fill, NormalizedBBox* placed);
#endif  // USE_OPENCV

}  // namespace caffe

#endif  // CAFFE_UTIL_SSD_AUGMENT_HPP_
