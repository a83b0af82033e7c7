// SSD data augmentation for AnnotatedData (see ssd_augment.hpp).
// Written for mtcnn-caffe; added to the brocolli-caffe sources by
// scripts/caffe_build/patches/apply_patches.py.
#ifdef USE_OPENCV
#include <opencv2/core/core.hpp>
#include <opencv2/imgproc/imgproc.hpp>
#endif  // USE_OPENCV

#include <cmath>
#include <string>
#include <vector>

#include "caffe/common.hpp"
#include "caffe/util/io.hpp"
#include "caffe/util/math_functions.hpp"
#include "caffe/util/rng.hpp"
#include "caffe/util/ssd_augment.hpp"

namespace caffe {

namespace {

void CheckProbability(float p, const std::string& field) {
  CHECK(p >= 0 && p <= 1) << "transform_param." << field
      << " must be within [0, 1], got " << p;
}

void CheckRange(float prob, float lower, float upper,
                const std::string& field) {
  if (prob > 0) {
    CHECK(lower >= 0 && lower <= upper) << "transform_param." << field
        << "_lower/_upper must satisfy 0 <= lower <= upper, got " << lower
        << " and " << upper;
  }
}

void CheckDistortion(const DistortionParameter& d) {
  CheckProbability(d.brightness_prob(), "distort_param.brightness_prob");
  CheckProbability(d.contrast_prob(), "distort_param.contrast_prob");
  CheckProbability(d.saturation_prob(), "distort_param.saturation_prob");
  CheckProbability(d.hue_prob(), "distort_param.hue_prob");
  CheckProbability(d.random_order_prob(), "distort_param.random_order_prob");
  CHECK(d.brightness_delta() >= 0 && d.brightness_delta() <= 255)
      << "transform_param.distort_param.brightness_delta must be within "
      << "[0, 255], got " << d.brightness_delta();
  CHECK(d.hue_delta() >= 0 && d.hue_delta() <= 180)
      << "transform_param.distort_param.hue_delta must be within [0, 180], got "
      << d.hue_delta();
  CheckRange(d.contrast_prob(), d.contrast_lower(), d.contrast_upper(),
             "distort_param.contrast");
  CheckRange(d.saturation_prob(), d.saturation_lower(), d.saturation_upper(),
             "distort_param.saturation");
}

}  // namespace

void CheckSsdAugmentationParameter(const TransformationParameter& param) {
  if (param.has_distort_param()) {
    CheckDistortion(param.distort_param());
  }
  if (param.has_expand_param()) {
    const ExpansionParameter& e = param.expand_param();
    CheckProbability(e.prob(), "expand_param.prob");
    CHECK(e.max_expand_ratio() >= 1 && e.max_expand_ratio() <= 100)
        << "transform_param.expand_param.max_expand_ratio must be within "
        << "[1, 100], got " << e.max_expand_ratio();
    CHECK(param.has_resize_param() && param.resize_param().height() > 0 &&
          param.resize_param().width() > 0)
        << "transform_param.expand_param needs resize_param with height and "
        << "width: expanded images differ in size";
  }
}

#ifdef USE_OPENCV

namespace {

float Uniform(float a, float b) {
  float r;
  caffe_rng_uniform<float>(1, a, b, &r);
  return r;
}

bool Happens(float prob) {
  return prob > 0 && Uniform(0.f, 1.f) < prob;
}

cv::Mat AffineMap(const cv::Mat& img, double alpha, double beta) {
  cv::Mat out;
  img.convertTo(out, -1, alpha, beta);  // saturates to [0, 255]
  return out;
}

// Applies a 256-entry lookup table to one channel of the image in HSV.
cv::Mat MapHsvChannel(const cv::Mat& img, int channel, const cv::Mat& lut) {
  cv::Mat hsv;
  cv::cvtColor(img, hsv, cv::COLOR_BGR2HSV);
  std::vector<cv::Mat> planes;
  cv::split(hsv, planes);
  cv::LUT(planes[channel], lut, planes[channel]);
  cv::merge(planes, hsv);
  cv::Mat out;
  cv::cvtColor(hsv, out, cv::COLOR_HSV2BGR);
  return out;
}

cv::Mat RandomBrightness(const cv::Mat& img, const DistortionParameter& p) {
  if (!Happens(p.brightness_prob())) return img;
  const float delta = Uniform(-p.brightness_delta(), p.brightness_delta());
  return AffineMap(img, 1, delta);
}

cv::Mat RandomContrast(const cv::Mat& img, const DistortionParameter& p) {
  if (!Happens(p.contrast_prob())) return img;
  return AffineMap(img, Uniform(p.contrast_lower(), p.contrast_upper()), 0);
}

cv::Mat RandomSaturation(const cv::Mat& img, const DistortionParameter& p) {
  if (img.channels() != 3 || !Happens(p.saturation_prob())) return img;
  const float alpha = Uniform(p.saturation_lower(), p.saturation_upper());
  cv::Mat lut(1, 256, CV_8U);
  for (int v = 0; v < 256; ++v) {
    lut.at<uchar>(v) = cv::saturate_cast<uchar>(v * alpha);
  }
  return MapHsvChannel(img, 1, lut);
}

// OpenCV's 8-bit hue is an angle in [0, 180): the shift wraps around.
cv::Mat RandomHue(const cv::Mat& img, const DistortionParameter& p) {
  if (img.channels() != 3 || !Happens(p.hue_prob())) return img;
  const int shift = cvRound(Uniform(-p.hue_delta(), p.hue_delta()));
  cv::Mat lut(1, 256, CV_8U);
  for (int v = 0; v < 256; ++v) {
    lut.at<uchar>(v) = v < 180 ? ((v + shift) % 180 + 180) % 180 : v;
  }
  return MapHsvChannel(img, 0, lut);
}

cv::Mat RandomChannelOrder(const cv::Mat& img, const DistortionParameter& p) {
  if (img.channels() != 3 || !Happens(p.random_order_prob())) return img;
  std::vector<cv::Mat> planes, shuffled;
  cv::split(img, planes);
  std::vector<int> order;
  for (int c = 0; c < 3; ++c) order.push_back(c);
  shuffle(order.begin(), order.end());
  for (int c = 0; c < 3; ++c) shuffled.push_back(planes[order[c]]);
  cv::Mat out;
  cv::merge(shuffled, out);
  return out;
}

cv::Mat DatumToImage(const TransformationParameter& param,
                     const Datum& datum) {
  if (datum.encoded()) {
    if (param.force_color() || param.force_gray()) {
      return DecodeDatumToCVMat(datum, param.force_color());
    }
    return DecodeDatumToCVMatNative(datum);
  }
  const int channels = datum.channels();
  const int height = datum.height();
  const int width = datum.width();
  const std::string& data = datum.data();
  CHECK_EQ(data.size(), static_cast<size_t>(channels) * height * width)
      << "distort_param/expand_param need 8-bit image data in the datum";
  cv::Mat img(height, width, CV_8UC(channels));
  for (int y = 0; y < height; ++y) {
    uchar* row = img.ptr<uchar>(y);
    for (int x = 0; x < width; ++x) {
      for (int c = 0; c < channels; ++c) {
        row[x * channels + c] = data[(c * height + y) * width + x];
      }
    }
  }
  return img;
}

std::vector<float> FillValues(const TransformationParameter& param,
                              int channels) {
  std::vector<float> fill(channels, 0.f);
  for (int c = 0; c < channels; ++c) {
    if (param.mean_value_size() == 1) fill[c] = param.mean_value(0);
    if (param.mean_value_size() > c && param.mean_value_size() > 1) {
      fill[c] = param.mean_value(c);
    }
  }
  return fill;
}

// Maps boxes normalised to the image onto the canvas the image was placed on.
void PlaceBoxes(const NormalizedBBox& placed, AnnotatedDatum* datum) {
  const float sx = placed.xmax() - placed.xmin();
  const float sy = placed.ymax() - placed.ymin();
  for (int g = 0; g < datum->annotation_group_size(); ++g) {
    AnnotationGroup* group = datum->mutable_annotation_group(g);
    for (int a = 0; a < group->annotation_size(); ++a) {
      NormalizedBBox* box = group->mutable_annotation(a)->mutable_bbox();
      box->set_xmin(placed.xmin() + box->xmin() * sx);
      box->set_ymin(placed.ymin() + box->ymin() * sy);
      box->set_xmax(placed.xmin() + box->xmax() * sx);
      box->set_ymax(placed.ymin() + box->ymax() * sy);
    }
  }
}

}  // namespace

cv::Mat SsdDistortImage(const cv::Mat& img, const DistortionParameter& param) {
  cv::Mat out = RandomBrightness(img, param);
  if (Uniform(0.f, 1.f) > 0.5f) {
    out = RandomContrast(out, param);
    out = RandomSaturation(out, param);
    out = RandomHue(out, param);
  } else {
    out = RandomSaturation(out, param);
    out = RandomHue(out, param);
    out = RandomContrast(out, param);
  }
  return RandomChannelOrder(out, param);
}

cv::Mat SsdExpandImage(const cv::Mat& img, const ExpansionParameter& param,
                       const std::vector<float>& fill,
                       NormalizedBBox* placed) {
  placed->set_xmin(0);
  placed->set_ymin(0);
  placed->set_xmax(1);
  placed->set_ymax(1);
  if (param.max_expand_ratio() <= 1 || !Happens(param.prob())) return img;
  const float ratio = Uniform(1.f, param.max_expand_ratio());
  const int width = static_cast<int>(img.cols * ratio);
  const int height = static_cast<int>(img.rows * ratio);
  if (width == img.cols && height == img.rows) return img;
  const int x0 = static_cast<int>(std::floor(Uniform(0.f, width - img.cols)));
  const int y0 = static_cast<int>(std::floor(Uniform(0.f, height - img.rows)));
  cv::Scalar value;
  for (int c = 0; c < img.channels() && c < 4; ++c) value[c] = fill[c];
  cv::Mat canvas(height, width, img.type(), value);
  img.copyTo(canvas(cv::Rect(x0, y0, img.cols, img.rows)));
  placed->set_xmin(static_cast<float>(x0) / width);
  placed->set_ymin(static_cast<float>(y0) / height);
  placed->set_xmax(static_cast<float>(x0 + img.cols) / width);
  placed->set_ymax(static_cast<float>(y0 + img.rows) / height);
  return canvas;
}

bool AugmentAnnotatedDatum(const TransformationParameter& param,
                           const AnnotatedDatum& in, AnnotatedDatum* out) {
  if (!param.has_distort_param() && !param.has_expand_param()) return false;
  const cv::Mat original = DatumToImage(param, in.datum());
  cv::Mat img = original;
  if (param.has_distort_param()) {
    img = SsdDistortImage(img, param.distort_param());
  }
  NormalizedBBox placed;
  if (param.has_expand_param()) {
    img = SsdExpandImage(img, param.expand_param(),
                         FillValues(param, img.channels()), &placed);
  }
  if (img.data == original.data) return false;  // nothing was applied
  out->CopyFrom(in);
  if (in.datum().encoded()) {
    EncodeCVMatToDatum(img, "png", out->mutable_datum());
  } else {
    CVMatToDatum(img, out->mutable_datum());
  }
  if (param.has_expand_param()) PlaceBoxes(placed, out);
  return true;
}

#else  // USE_OPENCV

bool AugmentAnnotatedDatum(const TransformationParameter& param,
                           const AnnotatedDatum& in, AnnotatedDatum* out) {
  CHECK(!param.has_distort_param() && !param.has_expand_param())
      << "distort_param and expand_param require OpenCV (USE_OPENCV)";
  return false;
}

#endif  // USE_OPENCV

}  // namespace caffe
