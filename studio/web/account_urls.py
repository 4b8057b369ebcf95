"""Sign in and out, password change and (when e-mail is configured) password reset, under the
names Django's auth views and templates expect (mounted at /accounts/ by studio.urls)."""

from django.contrib.auth import views as auth_views
from django.urls import path

from studio.web.views.accounts import LoginView, requires_email

urlpatterns = [
    path("login/", LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("password_change/", auth_views.PasswordChangeView.as_view(), name="password_change"),
    path(
        "password_change/done/",
        auth_views.PasswordChangeDoneView.as_view(),
        name="password_change_done",
    ),
    path(
        "password_reset/",
        requires_email(auth_views.PasswordResetView.as_view()),
        name="password_reset",
    ),
    path(
        "password_reset/done/",
        requires_email(auth_views.PasswordResetDoneView.as_view()),
        name="password_reset_done",
    ),
    path(
        "reset/<uidb64>/<token>/",
        requires_email(auth_views.PasswordResetConfirmView.as_view()),
        name="password_reset_confirm",
    ),
    path(
        "reset/done/",
        requires_email(auth_views.PasswordResetCompleteView.as_view()),
        name="password_reset_complete",
    ),
]
