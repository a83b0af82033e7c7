/* Force-included (-include) into every Caffe translation unit.
 * The brocolli-caffe sources still use a few OpenCV 2/3 C-era names that
 * OpenCV 4 dropped; map them to their cv:: equivalents so no source is edited.
 * The cv:: names are only needed where the macros expand, and those files
 * include the OpenCV headers themselves. */
#ifndef MTCNN_CAFFE_OPENCV4_COMPAT_H_
#define MTCNN_CAFFE_OPENCV4_COMPAT_H_
#ifdef __cplusplus
#include <opencv2/core/version.hpp>
#if CV_VERSION_MAJOR >= 4
#include <opencv2/imgproc/types_c.h>
#ifndef CV_LOAD_IMAGE_COLOR
#define CV_LOAD_IMAGE_COLOR cv::IMREAD_COLOR
#endif
#ifndef CV_LOAD_IMAGE_GRAYSCALE
#define CV_LOAD_IMAGE_GRAYSCALE cv::IMREAD_GRAYSCALE
#endif
#ifndef CV_IMWRITE_JPEG_QUALITY
#define CV_IMWRITE_JPEG_QUALITY cv::IMWRITE_JPEG_QUALITY
#endif
#ifndef CV_CAP_PROP_FRAME_COUNT
#define CV_CAP_PROP_FRAME_COUNT cv::CAP_PROP_FRAME_COUNT
#endif
#ifndef CV_CAP_PROP_POS_FRAMES
#define CV_CAP_PROP_POS_FRAMES cv::CAP_PROP_POS_FRAMES
#endif
#ifndef CV_FILLED
#define CV_FILLED cv::FILLED
#endif
#ifndef CV_RGB
#define CV_RGB(r, g, b) cv::Scalar((b), (g), (r), 0)
#endif
#ifndef CV_FOURCC
#define CV_FOURCC(c1, c2, c3, c4) cv::VideoWriter::fourcc(c1, c2, c3, c4)
#endif
#endif  /* CV_VERSION_MAJOR >= 4 */
#endif  /* __cplusplus */
#endif  /* MTCNN_CAFFE_OPENCV4_COMPAT_H_ */
