// Native depthwise convolution (see depthwise_conv_layer.hpp).
// Written for mtcnn-caffe; added to the brocolli-caffe sources by
// scripts/caffe_build/patches/apply_patches.py.
#include <stdint.h>

#include <algorithm>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include "caffe/filler.hpp"
#include "caffe/layer_factory.hpp"
#include "caffe/layers/depthwise_conv_layer.hpp"
#include "caffe/util/math_functions.hpp"

// The thread count OpenBLAS was given (OPENBLAS_NUM_THREADS, else the cores);
// pycaffe is linked with -lopenblas.
extern "C" int openblas_get_num_threads(void);

namespace caffe {

namespace {

// Multiply-adds below which a task is not split over threads.
const double kMinWorkPerThread = 1 << 16;

// Runs fn(begin, end) over [0, items) in contiguous chunks, one per thread,
// with as many threads as OpenBLAS has and `work` (multiply-adds in all)
// justifies; fn must only write what belongs to its own items.
template <typename Fn>
void ParallelFor(int items, double work, const Fn& fn) {
  const int blas_threads = std::max(1, openblas_get_num_threads());
  const int by_work = static_cast<int>(
      std::min<double>(items, std::max(1.0, work / kMinWorkPerThread)));
  const int threads = std::min(blas_threads, by_work);
  if (threads <= 1) {
    fn(0, items);
    return;
  }
  // Chunk t is [bound(t), bound(t + 1)); this thread runs chunk 0.
  auto bound = [items, threads](int t) {
    return static_cast<int>(static_cast<int64_t>(items) * t / threads);
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) {
    pool.push_back(std::thread(fn, bound(t), bound(t + 1)));
  }
  fn(0, bound(1));
  for (size_t t = 0; t < pool.size(); ++t) pool[t].join();
}

// y[i * incy] += a * x[i * incx] for i in [0, n); the unit-stride and
// stride-2 cases are spelt out so that the compiler vectorises them.
template <typename Dtype>
inline void StridedAxpy(int n, Dtype a, const Dtype* __restrict__ x, int incx,
                        Dtype* __restrict__ y, int incy) {
  if (incx == 1 && incy == 1) {
    for (int i = 0; i < n; ++i) y[i] += a * x[i];
  } else if (incx == 2 && incy == 1) {
    for (int i = 0; i < n; ++i) y[i] += a * x[2 * i];
  } else {
    for (int i = 0; i < n; ++i) y[i * incy] += a * x[i * incx];
  }
}

// acc[i] += x[i] * y[i * incy] for i in [0, n) (lane-wise partial sums of a
// dot product, summed by the caller).
template <typename Dtype>
inline void StridedMulAcc(int n, const Dtype* __restrict__ x,
                          const Dtype* __restrict__ y, int incy,
                          Dtype* __restrict__ acc) {
  if (incy == 1) {
    for (int i = 0; i < n; ++i) acc[i] += x[i] * y[i];
  } else if (incy == 2) {
    for (int i = 0; i < n; ++i) acc[i] += x[i] * y[2 * i];
  } else {
    for (int i = 0; i < n; ++i) acc[i] += x[i] * y[i * incy];
  }
}

// The start of every error message: the layer's type and name (in quotes,
// which the project's model checks read the failing layer from).
std::string Where(const std::string& layer) {
  return "ConvolutionDepthwise layer '" + layer + "': ";
}

// A 2-D size given either by `field`_h / `field`_w or by the repeated
// `field` with 0 (default_value for both), 1 (both) or 2 (h, w) values.
void ReadPair(const std::string& layer, const std::string& field,
              const google::protobuf::RepeatedField<unsigned int>& values,
              bool has_h, unsigned int h, bool has_w, unsigned int w,
              int default_value, int* out_h, int* out_w) {
  if (has_h || has_w) {
    CHECK(has_h && has_w) << Where(layer)
        << "give both " << field << "_h and " << field << "_w";
    CHECK_EQ(values.size(), 0) << Where(layer)
        << "give either " << field << " or " << field << "_h/_w, not both";
    *out_h = h;
    *out_w = w;
    return;
  }
  CHECK_LE(values.size(), 2) << Where(layer) << field << " has "
      << values.size() << " values; a 2-D convolution takes one or two";
  *out_h = values.size() == 0 ? default_value : values.Get(0);
  *out_w = values.size() == 0 ? default_value : values.Get(values.size() - 1);
}

}  // namespace

template <typename Dtype>
void ConvolutionDepthwiseLayer<Dtype>::LayerSetUp(
    const vector<Blob<Dtype>*>& bottom, const vector<Blob<Dtype>*>& top) {
  const ConvolutionParameter& param = this->layer_param_.convolution_param();
  const std::string& name = this->layer_param_.name();
  CHECK_EQ(bottom[0]->num_axes(), 4) << Where(name)
      << "the input must be N x C x H x W, got "
      << bottom[0]->shape_string();
  CHECK_EQ(bottom[0]->CanonicalAxisIndex(param.axis()), 1)
      << Where(name) << "convolution_param.axis must be 1 (channels)";
  for (size_t i = 0; i < top.size(); ++i) {
    CHECK(top[i] != bottom[i]) << Where(name)
        << "cannot run in place (give top " << i << " its own blob)";
  }
  channels_ = bottom[0]->shape(1);
  CHECK_EQ(static_cast<int>(param.num_output()), channels_)
      << Where(name) << "num_output " << param.num_output()
      << " must equal the input channel count " << channels_
      << " (depthwise multiplier 1; for other multipliers use Convolution"
      << " with group)";
  CHECK(!param.has_group() || static_cast<int>(param.group()) == channels_)
      << Where(name) << "group " << param.group()
      << " must equal the input channel count " << channels_
      << " or be left out";
  ReadPair(name, "kernel", param.kernel_size(), param.has_kernel_h(),
           param.kernel_h(), param.has_kernel_w(), param.kernel_w(), 0,
           &kernel_h_, &kernel_w_);
  ReadPair(name, "stride", param.stride(), param.has_stride_h(),
           param.stride_h(), param.has_stride_w(), param.stride_w(), 1,
           &stride_h_, &stride_w_);
  ReadPair(name, "pad", param.pad(), param.has_pad_h(), param.pad_h(),
           param.has_pad_w(), param.pad_w(), 0, &pad_h_, &pad_w_);
  ReadPair(name, "dilation", param.dilation(), false, 0, false, 0, 1,
           &dilation_h_, &dilation_w_);
  CHECK(kernel_h_ > 0 && kernel_w_ > 0) << Where(name)
      << "kernel_size (or kernel_h and kernel_w) must be positive";
  CHECK(stride_h_ > 0 && stride_w_ > 0) << Where(name)
      << "stride must be positive";
  CHECK(dilation_h_ > 0 && dilation_w_ > 0) << Where(name)
      << "dilation must be positive";
  bias_term_ = param.bias_term();

  vector<int> weight_shape(4);
  weight_shape[0] = channels_;
  weight_shape[1] = 1;
  weight_shape[2] = kernel_h_;
  weight_shape[3] = kernel_w_;
  const vector<int> bias_shape(1, channels_);
  if (this->blobs_.size() > 0) {
    CHECK_EQ(this->blobs_.size(), bias_term_ ? 2 : 1) << Where(name)
        << "wrong number of parameter blobs for bias_term " << bias_term_;
    CHECK(this->blobs_[0]->shape() == weight_shape)
        << Where(name) << "weights have shape "
        << this->blobs_[0]->shape_string() << ", expected "
        << Blob<Dtype>(weight_shape).shape_string();
    if (bias_term_) {
      CHECK(this->blobs_[1]->shape() == bias_shape)
          << Where(name) << "bias has shape "
          << this->blobs_[1]->shape_string() << ", expected " << channels_;
    }
  } else {
    this->blobs_.resize(bias_term_ ? 2 : 1);
    this->blobs_[0].reset(new Blob<Dtype>(weight_shape));
    shared_ptr<Filler<Dtype> > weight_filler(
        GetFiller<Dtype>(param.weight_filler()));
    weight_filler->Fill(this->blobs_[0].get());
    if (bias_term_) {
      this->blobs_[1].reset(new Blob<Dtype>(bias_shape));
      shared_ptr<Filler<Dtype> > bias_filler(
          GetFiller<Dtype>(param.bias_filler()));
      bias_filler->Fill(this->blobs_[1].get());
    }
  }
  this->param_propagate_down_.resize(this->blobs_.size(), true);
}

template <typename Dtype>
void ConvolutionDepthwiseLayer<Dtype>::Reshape(
    const vector<Blob<Dtype>*>& bottom, const vector<Blob<Dtype>*>& top) {
  const std::string& name = this->layer_param_.name();
  CHECK_EQ(bottom[0]->num_axes(), 4) << Where(name)
      << "the input must be N x C x H x W, got "
      << bottom[0]->shape_string();
  CHECK_EQ(bottom[0]->shape(1), channels_) << Where(name)
      << "the input channel count changed after set-up";
  for (size_t i = 1; i < bottom.size(); ++i) {
    CHECK(bottom[i]->shape() == bottom[0]->shape())
        << Where(name) << "input " << i << " has shape "
        << bottom[i]->shape_string() << ", input 0 "
        << bottom[0]->shape_string() << " (all inputs must agree)";
  }
  height_ = bottom[0]->shape(2);
  width_ = bottom[0]->shape(3);
  const int extent_h = dilation_h_ * (kernel_h_ - 1) + 1;
  const int extent_w = dilation_w_ * (kernel_w_ - 1) + 1;
  out_h_ = (height_ + 2 * pad_h_ - extent_h) / stride_h_ + 1;
  out_w_ = (width_ + 2 * pad_w_ - extent_w) / stride_w_ + 1;
  CHECK(height_ + 2 * pad_h_ >= extent_h && width_ + 2 * pad_w_ >= extent_w)
      << Where(name) << "the input " << bottom[0]->shape_string()
      << " with pad is smaller than the kernel";
  spans_.resize(kernel_w_);
  for (int kw = 0; kw < kernel_w_; ++kw) {
    ColumnSpan& span = spans_[kw];
    span.offset = kw * dilation_w_ - pad_w_;
    // Output columns whose input column ow * stride + offset is in the image.
    span.begin = span.offset >= 0 ? 0 :
        (-span.offset + stride_w_ - 1) / stride_w_;
    const int last = width_ - 1 - span.offset;
    span.end = last < 0 ? 0 : std::min(out_w_, last / stride_w_ + 1);
    span.begin = std::min(span.begin, span.end);
  }
  vector<int> top_shape(bottom[0]->shape());
  top_shape[2] = out_h_;
  top_shape[3] = out_w_;
  for (size_t i = 0; i < top.size(); ++i) top[i]->Reshape(top_shape);
}

template <typename Dtype>
template <typename Fn>
void ConvolutionDepthwiseLayer<Dtype>::ForEachTap(const Fn& fn) const {
  for (int oh = 0; oh < out_h_; ++oh) {
    for (int kh = 0; kh < kernel_h_; ++kh) {
      const int ih = InputRow(oh, kh);
      if (ih < 0 || ih >= height_) continue;
      for (int kw = 0; kw < kernel_w_; ++kw) {
        fn(oh, ih, kh * kernel_w_ + kw, spans_[kw]);
      }
    }
  }
}

template <typename Dtype>
void ConvolutionDepthwiseLayer<Dtype>::ForwardPlane(const Dtype* input,
    const Dtype* weight, Dtype bias, Dtype* output) const {
  std::fill(output, output + out_h_ * out_w_, bias);
  ForEachTap([&](int oh, int ih, int tap, const ColumnSpan& span) {
    StridedAxpy(span.end - span.begin, weight[tap],
                input + ih * width_ + span.begin * stride_w_ + span.offset,
                stride_w_, output + oh * out_w_ + span.begin, 1);
  });
}

template <typename Dtype>
void ConvolutionDepthwiseLayer<Dtype>::BackwardDataPlane(
    const Dtype* top_diff, const Dtype* weight, Dtype* bottom_diff) const {
  std::fill(bottom_diff, bottom_diff + height_ * width_, Dtype(0));
  ForEachTap([&](int oh, int ih, int tap, const ColumnSpan& span) {
    StridedAxpy(span.end - span.begin, weight[tap],
                top_diff + oh * out_w_ + span.begin, 1,
                bottom_diff + ih * width_ + span.begin * stride_w_
                + span.offset, stride_w_);
  });
}

template <typename Dtype>
void ConvolutionDepthwiseLayer<Dtype>::BackwardParamPlane(
    const Dtype* top_diff, const Dtype* input, Dtype* weight_diff,
    Dtype* bias_diff, Dtype* scratch) const {
  // Lane-wise partial sums, one row of out_w_ per kernel tap (and the bias),
  // summed at the end: vectorisable, and more accurate than one running sum.
  const int taps = kernel_h_ * kernel_w_;
  Dtype* bias_acc = scratch + taps * out_w_;
  std::fill(scratch, scratch + (taps + 1) * out_w_, Dtype(0));
  if (bias_diff) {
    for (int oh = 0; oh < out_h_; ++oh) {
      StridedAxpy(out_w_, Dtype(1), top_diff + oh * out_w_, 1, bias_acc, 1);
    }
    *bias_diff += std::accumulate(bias_acc, bias_acc + out_w_, Dtype(0));
  }
  if (!weight_diff) return;
  ForEachTap([&](int oh, int ih, int tap, const ColumnSpan& span) {
    StridedMulAcc(span.end - span.begin, top_diff + oh * out_w_ + span.begin,
                  input + ih * width_ + span.begin * stride_w_ + span.offset,
                  stride_w_, scratch + tap * out_w_ + span.begin);
  });
  for (int k = 0; k < taps; ++k) {
    const Dtype* acc = scratch + k * out_w_;
    weight_diff[k] += std::accumulate(acc, acc + out_w_, Dtype(0));
  }
}

template <typename Dtype>
void ConvolutionDepthwiseLayer<Dtype>::Forward_cpu(
    const vector<Blob<Dtype>*>& bottom, const vector<Blob<Dtype>*>& top) {
  const Dtype* weight = this->blobs_[0]->cpu_data();
  const Dtype* bias = bias_term_ ? this->blobs_[1]->cpu_data() : NULL;
  const int taps = kernel_h_ * kernel_w_;
  const int in_plane = height_ * width_;
  const int out_plane = out_h_ * out_w_;
  const int planes = bottom[0]->shape(0) * channels_;
  for (size_t i = 0; i < bottom.size(); ++i) {
    const Dtype* input = bottom[i]->cpu_data();
    Dtype* output = top[i]->mutable_cpu_data();
    ParallelFor(planes, static_cast<double>(planes) * out_plane * taps,
                [&](int begin, int end) {
      for (int p = begin; p < end; ++p) {
        const int c = p % channels_;
        ForwardPlane(input + static_cast<int64_t>(p) * in_plane,
                     weight + c * taps, bias ? bias[c] : Dtype(0),
                     output + static_cast<int64_t>(p) * out_plane);
      }
    });
  }
}

template <typename Dtype>
void ConvolutionDepthwiseLayer<Dtype>::Backward_cpu(
    const vector<Blob<Dtype>*>& top, const vector<bool>& propagate_down,
    const vector<Blob<Dtype>*>& bottom) {
  const Dtype* weight = this->blobs_[0]->cpu_data();
  Dtype* weight_diff = this->param_propagate_down_[0] ?
      this->blobs_[0]->mutable_cpu_diff() : NULL;
  Dtype* bias_diff = bias_term_ && this->param_propagate_down_[1] ?
      this->blobs_[1]->mutable_cpu_diff() : NULL;
  const int taps = kernel_h_ * kernel_w_;
  const int in_plane = height_ * width_;
  const int out_plane = out_h_ * out_w_;
  const int num = bottom[0]->shape(0);
  for (size_t i = 0; i < top.size(); ++i) {
    const Dtype* top_diff = top[i]->cpu_diff();
    const Dtype* input = bottom[i]->cpu_data();
    Dtype* bottom_diff = propagate_down[i] ? bottom[i]->mutable_cpu_diff()
                                           : NULL;
    if (!bottom_diff && !weight_diff && !bias_diff) continue;
    // Split by channel: a thread owns its channels' parameter gradients.
    ParallelFor(channels_, 2.0 * num * channels_ * out_plane * taps,
                [&](int begin, int end) {
      vector<Dtype> scratch((taps + 1) * out_w_);
      for (int c = begin; c < end; ++c) {
        for (int n = 0; n < num; ++n) {
          const int64_t p = static_cast<int64_t>(n) * channels_ + c;
          if (weight_diff || bias_diff) {
            BackwardParamPlane(top_diff + p * out_plane,
                               input + p * in_plane,
                               weight_diff ? weight_diff + c * taps : NULL,
                               bias_diff ? bias_diff + c : NULL,
                               scratch.data());
          }
          if (bottom_diff) {
            BackwardDataPlane(top_diff + p * out_plane, weight + c * taps,
                              bottom_diff + p * in_plane);
          }
        }
      }
    });
  }
}

INSTANTIATE_CLASS(ConvolutionDepthwiseLayer);
REGISTER_LAYER_CLASS(ConvolutionDepthwise);
// The name some Caffe forks and converted models use for the same layer.
REGISTER_LAYER_CREATOR(DepthwiseConvolution,
                       Creator_ConvolutionDepthwiseLayer);

}  // namespace caffe
