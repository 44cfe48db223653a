"""Attribution: who referred whom. Referral codes and clicks (`clicks`, with the buffered click
writer), the `?ref=` link on the portal's own pages (`middleware`), clicks on the operator's
site through the tracking script's call (`tracking`) and redirect links (`redirects`)."""
